/* The collector's inner loops, compiled (see kernels.py, which loads this with ctypes).
 *
 * Plain C99 over caller-owned numpy buffers: no Python API, so the library
 * does not depend on the interpreter's version, and ctypes releases the GIL
 * while a loop runs. kernels.py checks each array's dtype, contiguity and
 * length; these loops check every index they follow before using it and
 * return OUT_OF_RANGE instead of reading or writing outside a buffer (the
 * group numbers of a GroupMatrix are checked once, when it is made). An output
 * whose size depends on the data (group_entries, walk_fields) comes with its
 * capacity, and the loop returns NO_ROOM rather than write past it.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define OUT_OF_RANGE (-3)
#define NO_ROOM (-2) /* the output would not fit in the room the caller gave */
#define NO_MEMORY (-1)

/* The version of this library's interface: every function's arguments, return codes and
 * meaning. kernels.py calls a library only if it returns the ABI kernels.py was written
 * for, so a library built from an older source (a stale _kernels.so in an editable
 * install) is not called with arguments it does not take. Change it here and in
 * kernels.py (ABI) together, with any change to an exported function's interface. */
#define SEGWATCH_KERNELS_ABI 3

int64_t segwatch_kernels_abi(void) { return SEGWATCH_KERNELS_ABI; }

/* The loops below read a group matrix row by row: groups is n_rows x n_dims (row-major),
 * groups[r * n_dims + d] the group of row r in dimension d, and each dimension's groups
 * are its own (kernels.py's GroupMatrix checks that the dimensions' group ranges do not
 * overlap). Group numbers are 32-bit there (a chunk has far fewer than 2^31 groups;
 * kernels.py checks): every quantity's loop streams the whole matrix, rows x dimensions,
 * often larger than the caches, and half the bytes is half that traffic. So a row is read once for every dimension, the n_dims updates of one row go to
 * n_dims different groups and do not wait on each other (a loop dimension by dimension
 * waited on each sum in turn whenever consecutive rows fell in one group), and every group
 * still adds its rows' terms in row order: the order numpy's bincount over the tiled
 * arrays adds them, so the same sums, bit for bit. */

enum { STAT_PRESENT, STAT_COUNT, STAT_SUM, STAT_SUM_SQ, STAT_MIN, STAT_MAX, STAT_SLOT = 8 };

/* Per group: weighted rows present, numeric count, sum, sum of squares, min, max. While
 * counting, a group's six statistics share one 64-byte slot (one cache line per update). */
int64_t segwatch_group_stats(const int32_t *groups, int64_t n_dims, int64_t n_rows,
                             const int64_t *present, int64_t n_present,
                             const int64_t *number_pos, const double *numbers,
                             int64_t n_numbers, const double *weights, int64_t total,
                             double *weighted_present, double *numeric_count, double *sums,
                             double *sum_sq, double *minima, double *maxima) {
    for (int64_t i = 0; i < n_present; i++)
        if (present[i] < 0 || present[i] >= n_rows) return OUT_OF_RANGE;
    for (int64_t i = 0; i < n_numbers; i++)
        if (number_pos[i] < 0 || number_pos[i] >= n_rows) return OUT_OF_RANGE;
    /* 64 bytes more than the slots, to start them on a cache line. */
    char *block = malloc((size_t)(total * STAT_SLOT + 8) * sizeof(double));
    if (!block) return NO_MEMORY;
    double *slots = (double *)(block + (64 - (uintptr_t)block % 64) % 64);
    for (int64_t g = 0; g < total; g++) {
        double *slot = slots + g * STAT_SLOT;
        slot[STAT_PRESENT] = slot[STAT_COUNT] = slot[STAT_SUM] = slot[STAT_SUM_SQ] = 0.0;
        slot[STAT_MIN] = INFINITY;
        slot[STAT_MAX] = -INFINITY;
    }
    for (int64_t i = 0; i < n_present; i++) {
        int64_t r = present[i];
        const int32_t *group_of = groups + r * n_dims;
        double w = weights[r];
        for (int64_t d = 0; d < n_dims; d++)
            slots[(int64_t)group_of[d] * STAT_SLOT + STAT_PRESENT] += w;
    }
    for (int64_t i = 0; i < n_numbers; i++) {
        int64_t r = number_pos[i];
        const int32_t *group_of = groups + r * n_dims;
        double w = weights[r], v = numbers[i];
        double vw = v * w, vvw = v * v * w; /* as numpy: (v * v) * w */
        for (int64_t d = 0; d < n_dims; d++) {
            double *slot = slots + (int64_t)group_of[d] * STAT_SLOT;
            slot[STAT_COUNT] += w;
            slot[STAT_SUM] += vw;
            slot[STAT_SUM_SQ] += vvw;
            if (v < slot[STAT_MIN]) slot[STAT_MIN] = v;
            if (v > slot[STAT_MAX]) slot[STAT_MAX] = v;
        }
    }
    for (int64_t g = 0; g < total; g++) {
        const double *slot = slots + g * STAT_SLOT;
        weighted_present[g] = slot[STAT_PRESENT];
        numeric_count[g] = slot[STAT_COUNT];
        sums[g] = slot[STAT_SUM];
        sum_sq[g] = slot[STAT_SUM_SQ];
        minima[g] = slot[STAT_MIN];
        maxima[g] = slot[STAT_MAX];
    }
    free(block);
    return 0;
}

/* group_entries' count when (group, key) cells are few: a counter per cell, then the
 * live groups' nonzero cells in key order. Rows are counted in every dimension at once
 * (by_row: n_rows x n_dims), the dimensions not overlapping (kernels.py checks), so each
 * cell still adds its rows in row order. Where every row weighs 1 (unsampled calls) the
 * counters are 32-bit integers, half the memory to go through; a sum of ones is exact in
 * a double as in an integer, so the entries are the same. */
static int64_t dense_entries(const int32_t *by_row, int64_t n_dims, const int64_t *rows,
                             const int64_t *rank, int64_t n, const double *weights,
                             const int64_t *live, int64_t n_live, int64_t total, int64_t span,
                             const int64_t *distinct, int64_t capacity, int64_t *lengths,
                             int64_t *out_keys, double *out_weights) {
    int unit = n < ((int64_t)1 << 31);
    for (int64_t i = 0; unit && i < n; i++) unit = weights[rows[i]] == 1.0;
    size_t cell_size = unit ? sizeof(uint32_t) : sizeof(double);
    void *cells = calloc((size_t)(total * span), cell_size);
    if (!cells) return NO_MEMORY;
    if (unit) {
        uint32_t *counts = cells;
        for (int64_t i = 0; i < n; i++) {
            const int32_t *group_of = by_row + rows[i] * n_dims;
            int64_t k = rank[i];
            for (int64_t d = 0; d < n_dims; d++) counts[(int64_t)group_of[d] * span + k]++;
        }
    } else {
        double *sums = cells;
        for (int64_t i = 0; i < n; i++) {
            int64_t r = rows[i], k = rank[i];
            const int32_t *group_of = by_row + r * n_dims;
            double w = weights[r];
            for (int64_t d = 0; d < n_dims; d++) sums[(int64_t)group_of[d] * span + k] += w;
        }
    }
    int64_t m = 0;
    for (int64_t li = 0; li < n_live; li++) {
        int64_t first = m, at = live[li] * span;
        for (int64_t j = 0; j < span; j++) {
            double value = unit ? (double)((uint32_t *)cells)[at + j] : ((double *)cells)[at + j];
            if (m < capacity) { /* written whether or not it counts: no branch to mispredict */
                out_keys[m] = distinct[j];
                out_weights[m] = value;
                m += value != 0.0;
            } else if (value != 0.0) {
                free(cells);
                return NO_ROOM;
            }
        }
        lengths[li] = m - first;
    }
    free(cells);
    return m;
}

/* Per group of `live` (sorted): its distinct keys (sorted) and their summed weights.
 *
 * The group matrix in both layouts: groups (n_dims x n_rows, for the sorted count) and
 * by_row (n_rows x n_dims, 32-bit, for the dense one). Row rows[i] has key keys[i] (n of them)
 * and counts in its group of every dimension with weights[rows[i]] (positive). Writes each live group's entry
 * count to lengths (room for n_live) and the entries, group after group, to
 * out_keys and out_weights (room for capacity each; n * n_dims is enough when no
 * live group repeats); returns how many, NO_MEMORY, NO_ROOM (more entries than
 * capacity: a live group given twice), or OUT_OF_RANGE (a row or live group out
 * of range, keys spanning more than max_width values). Cells add their weights in
 * the order numpy's bincount over the tiled arrays would. */
int64_t segwatch_group_entries(const int64_t *groups, const int32_t *by_row, int64_t n_dims,
                               int64_t n_rows, const int64_t *rows, const int64_t *keys, int64_t n,
                               const double *weights, const int64_t *live, int64_t n_live,
                               int64_t total, int64_t dense_cells, int64_t max_width,
                               int64_t capacity, int64_t *lengths, int64_t *out_keys,
                               double *out_weights) {
    for (int64_t i = 0; i < n; i++)
        if (rows[i] < 0 || rows[i] >= n_rows) return OUT_OF_RANGE;
    for (int64_t li = 0; li < n_live; li++)
        if (live[li] < 0 || live[li] >= total) return OUT_OF_RANGE;
    memset(lengths, 0, (size_t)n_live * sizeof(int64_t));
    if (n == 0) return 0;
    /* The distinct keys, sorted, and each entry's rank among them (a counting pass). */
    int64_t low = keys[0], high = keys[0];
    for (int64_t i = 1; i < n; i++) {
        if (keys[i] < low) low = keys[i];
        if (keys[i] > high) high = keys[i];
    }
    if ((uint64_t)high - (uint64_t)low >= (uint64_t)max_width) return OUT_OF_RANGE;
    int64_t width = high - low + 1;
    int64_t *index = calloc((size_t)width, sizeof(int64_t));
    int64_t *distinct = malloc((size_t)width * sizeof(int64_t));
    int64_t *rank = malloc((size_t)n * sizeof(int64_t));
    if (!index || !distinct || !rank) {
        free(index);
        free(distinct);
        free(rank);
        return NO_MEMORY;
    }
    for (int64_t i = 0; i < n; i++) index[keys[i] - low] = 1;
    int64_t span = 0;
    for (int64_t j = 0; j < width; j++) {
        if (index[j]) {
            index[j] = span;
            distinct[span++] = j + low;
        }
    }
    for (int64_t i = 0; i < n; i++) rank[i] = index[keys[i] - low];
    int64_t m = 0;
    if (total * span <= dense_cells) {
        m = dense_entries(by_row, n_dims, rows, rank, n, weights, live, n_live, total, span,
                          distinct, capacity, lengths, out_keys, out_weights);
        goto done;
    }
    /* Many cells (many groups, wide keys): sort the entries by (group, key) with two
     * stable counting sorts (by key, then by group), so equal cells end up adjacent
     * with their weights in the dense count's order, then merge them. */
    int64_t entries = n * n_dims;
    int64_t *starts = calloc((size_t)((total > span ? total : span) + 1), sizeof(int64_t));
    int64_t *by_key = malloc((size_t)entries * sizeof(int64_t));   /* entry numbers */
    int64_t *by_cell = malloc((size_t)entries * sizeof(int64_t));
    int64_t *entry_group = malloc((size_t)entries * sizeof(int64_t));
    int64_t *entry_key = malloc((size_t)entries * sizeof(int64_t));
    if (!starts || !by_key || !by_cell || !entry_group || !entry_key) {
        m = NO_MEMORY;
        goto free_buckets;
    }
    for (int64_t d = 0; d < n_dims; d++) { /* entry e = d * n + i, in the dense count's order */
        const int64_t *group_of = groups + d * n_rows;
        for (int64_t i = 0; i < n; i++) {
            entry_group[d * n + i] = group_of[rows[i]];
            entry_key[d * n + i] = rank[i];
        }
    }
    for (int64_t e = 0; e < entries; e++) starts[entry_key[e] + 1]++;
    for (int64_t k = 0; k < span; k++) starts[k + 1] += starts[k];
    for (int64_t e = 0; e < entries; e++) by_key[starts[entry_key[e]]++] = e;
    memset(starts, 0, (size_t)(total + 1) * sizeof(int64_t));
    for (int64_t e = 0; e < entries; e++) starts[entry_group[e] + 1]++;
    for (int64_t g = 0; g < total; g++) starts[g + 1] += starts[g];
    for (int64_t j = 0; j < entries; j++) {
        int64_t e = by_key[j];
        by_cell[starts[entry_group[e]]++] = e;
    }
    /* starts[g] is now where group g + 1 begins: group g is starts[g - 1] .. starts[g]. */
    for (int64_t li = 0; li < n_live; li++) {
        int64_t g = live[li], first = m;
        for (int64_t j = g ? starts[g - 1] : 0; j < starts[g]; j++) {
            int64_t e = by_cell[j];
            int64_t key = distinct[entry_key[e]];
            double weight = weights[rows[e % n]];
            if (m > first && out_keys[m - 1] == key) {
                out_weights[m - 1] += weight;
            } else {
                if (m >= capacity) {
                    m = NO_ROOM;
                    goto free_buckets;
                }
                out_keys[m] = key;
                out_weights[m++] = weight;
            }
        }
        lengths[li] = m - first;
    }
free_buckets:
    free(starts);
    free(by_key);
    free(by_cell);
    free(entry_group);
    free(entry_key);
done:
    free(index);
    free(distinct);
    free(rank);
    return m;
}

/* -- reading OTLP spans (decode/: span_table.py, key_values.py, wire.py) ------------------ */

/* A varint at buf[*pos] before end; advances *pos. 0 when it is cut off or too long. */
static int read_varint(const uint8_t *buf, int64_t *pos, int64_t end, uint64_t *value) {
    uint64_t result = 0;
    for (int shift = 0; shift < 64 && *pos < end; shift += 7) {
        uint8_t byte = buf[(*pos)++];
        result |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            *value = result;
            return 1;
        }
    }
    return 0;
}

/* Every field of every span buf[span_start[s]:span_end[s]], in span order: its span, field
 * number, wire type and payload bounds (a varint's own bytes; a length-delimited field's
 * bytes after the length). With span == NULL only counts. Returns the number of fields,
 * -1 when a span is irregular (field number 0, a wire type protobuf 3 does not use, a
 * field past its span), NO_ROOM when there are more than `capacity`, OUT_OF_RANGE when a
 * span is not within the buffer's buf_len bytes. */
int64_t segwatch_walk_fields(const uint8_t *buf, int64_t buf_len, const int64_t *span_start,
                             const int64_t *span_end, int64_t n_spans, int64_t capacity,
                             int64_t *span, int64_t *number, int64_t *wire_type, int64_t *start,
                             int64_t *stop) {
    int64_t n = 0;
    for (int64_t s = 0; s < n_spans; s++) {
        int64_t pos = span_start[s], end = span_end[s];
        if (pos < 0 || end < pos || end > buf_len) return OUT_OF_RANGE;
        while (pos < end) {
            uint64_t tag, value;
            if (!read_varint(buf, &pos, end, &tag) || (tag >> 3) == 0) return -1;
            int64_t body = pos, field_stop;
            switch (tag & 7) {
            case 0:
                if (!read_varint(buf, &pos, end, &value)) return -1;
                field_stop = pos;
                break;
            case 1:
                field_stop = body + 8;
                break;
            case 2:
                if (!read_varint(buf, &pos, end, &value) || value > (uint64_t)(end - pos))
                    return -1;
                body = pos;
                field_stop = pos + (int64_t)value;
                break;
            case 5:
                field_stop = body + 4;
                break;
            default:
                return -1; /* groups (3, 4) and 6, 7 */
            }
            if (field_stop > end) return -1;
            if (span != NULL) {
                if (n >= capacity) return NO_ROOM;
                span[n] = s;
                number[n] = (int64_t)(tag >> 3);
                wire_type[n] = (int64_t)(tag & 7);
                start[n] = body;
                stop[n] = field_stop;
            }
            n++;
            pos = field_stop;
        }
    }
    return n;
}

static uint64_t hash_bytes(const uint8_t *data, int64_t length) {
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)length; /* FNV-1a */
    for (int64_t i = 0; i < length; i++) h = (h ^ data[i]) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

/* Codes of the byte strings buf[start[i]:start[i]+length[i]], numbered in the order they
 * first appear; firsts[c] is the first slice with code c. Returns the number of distinct
 * strings, NO_MEMORY, or OUT_OF_RANGE when a slice is not within buf_len bytes. */
int64_t segwatch_factorize_slices(const uint8_t *buf, int64_t buf_len, const int64_t *start,
                                  const int64_t *length, int64_t n, int64_t *codes,
                                  int64_t *firsts) {
    for (int64_t i = 0; i < n; i++)
        if (start[i] < 0 || length[i] < 0 || length[i] > buf_len - start[i]) return OUT_OF_RANGE;
    int64_t size = 16;
    while (size < 2 * n) size *= 2;
    int64_t *table = malloc((size_t)size * sizeof(int64_t)); /* code + 1, 0 = empty */
    if (!table) return NO_MEMORY;
    memset(table, 0, (size_t)size * sizeof(int64_t));
    int64_t distinct = 0;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *data = buf + start[i];
        int64_t len = length[i];
        int64_t at = (int64_t)(hash_bytes(data, len) & (uint64_t)(size - 1));
        for (;;) {
            int64_t code = table[at] - 1;
            if (code < 0) {
                table[at] = distinct + 1;
                firsts[distinct] = i;
                codes[i] = distinct++;
                break;
            }
            int64_t first = firsts[code];
            if (length[first] == len && memcmp(buf + start[first], data, (size_t)len) == 0) {
                codes[i] = code;
                break;
            }
            at = (at + 1) & (size - 1);
        }
    }
    free(table);
    return distinct;
}

/* out[i] = the 8 little-endian bytes at buf[at[i]] (doubles and fixed64 fields); 0, or
 * OUT_OF_RANGE when a value is not within buf_len bytes. */
int64_t segwatch_read_fixed64(const uint8_t *buf, int64_t buf_len, const int64_t *at, int64_t n,
                              uint8_t *out) {
    for (int64_t i = 0; i < n; i++) {
        if (at[i] < 0 || at[i] > buf_len - 8) return OUT_OF_RANGE;
        memcpy(out + 8 * i, buf + at[i], 8);
    }
    return 0;
}

/* Where the key and the value of each attribute (a KeyValue message buf[start[i]:end[i]])
 * are, and what the value is: kind[i] is the AnyValue's tag byte (0x0A string, 0x10 bool,
 * 0x18 int, 0x21 double) or 0 for no value; payload[i] is where the string's bytes or the
 * number start, size[i] the string's length. Returns 0, or -1 when an attribute is not
 * that simple (the key not first, a key longer than max_key, anything after the value, a
 * value of another kind: arrays, maps, bytes), which the reference decoder then reads;
 * OUT_OF_RANGE when a message is not within buf_len bytes. */
int64_t segwatch_read_key_values(const uint8_t *buf, int64_t buf_len, const int64_t *start,
                                 const int64_t *end, int64_t n, int64_t max_key,
                                 int64_t *key_start, int64_t *key_length, uint8_t *kind,
                                 int64_t *payload, int64_t *size) {
    for (int64_t i = 0; i < n; i++) {
        int64_t pos = start[i], stop = end[i];
        if (pos < 0 || stop < pos || stop > buf_len) return OUT_OF_RANGE;
        uint64_t length;
        if (pos >= stop || buf[pos++] != 0x0A) return -1;
        if (!read_varint(buf, &pos, stop, &length) || length > (uint64_t)max_key ||
            length > (uint64_t)(stop - pos))
            return -1;
        key_start[i] = pos;
        key_length[i] = (int64_t)length;
        pos += (int64_t)length;
        kind[i] = 0;
        payload[i] = size[i] = 0;
        if (pos == stop) continue; /* no value */
        if (buf[pos++] != 0x12 || !read_varint(buf, &pos, stop, &length) ||
            length != (uint64_t)(stop - pos))
            return -1;
        if (length == 0) continue; /* an empty AnyValue */
        uint8_t tag = buf[pos++];
        kind[i] = tag;
        payload[i] = pos;
        if (tag == 0x21) {
            if (stop - pos != 8) return -1;
        } else if (tag == 0x0A || tag == 0x10 || tag == 0x18) {
            uint64_t inner;
            if (!read_varint(buf, &pos, stop, &inner)) return -1;
            if (tag == 0x0A) {
                if (inner != (uint64_t)(stop - pos)) return -1;
                payload[i] = pos;
                size[i] = (int64_t)inner;
            } else if (pos != stop) {
                return -1;
            }
        } else {
            return -1;
        }
    }
    return 0;
}
