"""The aggregator's compiled loops against the numpy formulation of the same sums.

Under ``SEGWATCH_KERNELS=numpy`` (CI's second run) the tests of the C functions themselves
skip; those of the wrappers run on the numpy formulation.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from segwatch.collector import kernels
from segwatch.collector.kernels import (
    GroupMatrix,
    _numpy_group_entries,
    _numpy_group_stats,
    group_entries,
    group_stats,
)

compiled_only = pytest.mark.skipif(
    kernels.NUMPY_FORCED, reason="SEGWATCH_KERNELS=numpy: this run leaves the compiled loops off"
)


@compiled_only
def test_the_compiled_loops_are_built_and_current():
    # pip install builds them (hatch_build.py); a stale build would test old code.
    assert kernels.COMPILED, f"{kernels.LIBRARY} was not built: is there a C compiler?"
    source = kernels.LIBRARY.with_name("_kernels.c")
    if source.exists():  # a source checkout
        assert kernels.LIBRARY.stat().st_mtime >= source.stat().st_mtime, (
            "_kernels.c changed since the library was built: pip install -e . again"
        )


def _case(seed: int, rows: int, dims: int, groups_per_dim: int, key_range: int, sampled: bool):
    rng = np.random.default_rng(seed)
    offsets = np.arange(dims) * groups_per_dim
    groups = (rng.integers(0, groups_per_dim, (dims, rows)) + offsets[:, None]).astype(np.int64)
    total = dims * groups_per_dim
    present = np.flatnonzero(rng.random(rows) < 0.8).astype(np.int64)
    number_pos = present[rng.random(len(present)) < 0.7]
    numbers = rng.normal(0, 100, len(number_pos))
    keys = rng.integers(-key_range, key_range + 1, len(number_pos)).astype(np.int64)
    weights = rng.uniform(0.1, 5, rows) if sampled else np.ones(rows)
    return groups, total, present, number_pos, numbers, keys, weights


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(0, 300),
    dims=st.integers(1, 5),
    groups_per_dim=st.integers(1, 40),
    key_range=st.sampled_from([0, 3, 200, 20000]),
    sampled=st.booleans(),
)
def test_kernels_equal_the_numpy_formulation(seed, rows, dims, groups_per_dim, key_range, sampled):
    groups, total, present, number_pos, numbers, keys, weights = _case(
        seed, rows, dims, groups_per_dim, key_range, sampled
    )
    checked = GroupMatrix(groups, total)
    stats = group_stats(checked, present, number_pos, numbers, weights)
    expected_stats = _numpy_group_stats(groups, present, number_pos, numbers, weights, total)
    for got, expected in zip(stats, expected_stats, strict=True):
        # The same terms added in the same order: equal, not merely close.
        np.testing.assert_array_equal(got, expected)
    live = np.unique(groups[:, present].ravel()) if len(present) else np.zeros(0, np.int64)
    # Both ways of counting, in both: dense counters, and what is used when cells are many.
    for dense_cells in (1 << 40, 0):
        expected = _numpy_group_entries(groups, number_pos, keys, weights, live, total, dense_cells)
        got = group_entries(checked, number_pos, keys, weights, live, dense_cells)
        assert got[0].tolist() == expected[0].tolist()
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[2], expected[2])


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_square_past_float64s_range_sums_to_inf_without_a_warning():
    """A value of 1e200 (OTLP doubles may be any finite number) has a square past float64's
    range: its group's sum of squares is inf in both formulations, and numpy's raises no
    RuntimeWarning (the C loops never did)."""
    groups = np.array([[0, 0, 1]], dtype=np.int64)
    rows = np.arange(3, dtype=np.int64)
    numbers, weights = np.array([1e200, 2.0, 3.0]), np.ones(3)
    for sums in (
        group_stats(GroupMatrix(groups, 2), rows, rows, numbers, weights),
        _numpy_group_stats(groups, rows, rows, numbers, weights, 2),
    ):
        assert sums[2].tolist() == [1e200 + 2.0, 3.0]
        assert sums[3].tolist() == [np.inf, 9.0]


@pytest.mark.parametrize("sampled", [False, True])
def test_dimensions_that_share_groups_are_summed_as_numpy_sums_them(sampled):
    """The C loops read a row's groups in every dimension at once, which keeps numpy's order
    of terms only when no group is in two dimensions: a matrix where some are runs numpy."""
    groups, total, present, number_pos, numbers, keys, weights = _case(7, 200, 3, 6, 20, sampled)
    shared = groups.copy()
    shared[1] = groups[0]  # the second dimension's groups are the first's
    checked = GroupMatrix(shared, total)
    assert checked.by_row is None and GroupMatrix(groups, total).by_row is not None
    stats = group_stats(checked, present, number_pos, numbers, weights)
    expected = _numpy_group_stats(shared, present, number_pos, numbers, weights, total)
    for got, want in zip(stats, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    live = np.unique(shared[:, present].ravel())
    got = group_entries(checked, number_pos, keys, weights, live)
    want = _numpy_group_entries(shared, number_pos, keys, weights, live, total, 1 << 40)
    for got_part, want_part in zip(got, want, strict=True):
        np.testing.assert_array_equal(got_part, want_part)


def test_the_c_loops_read_32_bit_groups_below_two_to_the_31_groups_and_numpy_runs_above():
    """:attr:`GroupMatrix.by_row` is int32: with 2^31 groups or more (``total``, not the
    matrix's size, decides) it is None, and the numpy formulation runs."""
    top = np.iinfo(np.int32).max  # 2^31 - 1
    groups = np.array([[0, 3, 1], [top - 2, top - 1, top - 2]], dtype=np.int64)
    fits = GroupMatrix(groups, top).by_row
    assert fits is not None and fits.dtype == np.int32
    assert fits.tolist() == groups.T.tolist()  # the largest group, 2^31 - 2, kept exactly
    assert GroupMatrix(groups, top + 1).by_row is None


def test_entries_skip_groups_that_are_not_live():
    groups = np.array([[0, 1, 2, 2]], dtype=np.int64)
    rows = np.arange(4, dtype=np.int64)
    keys = np.array([5, 6, 7, 7], dtype=np.int64)
    weights = np.array([1.0, 2.0, 0.5, 0.25])
    lengths, out_keys, out_weights = group_entries(
        GroupMatrix(groups, 3), rows, keys, weights, np.array([0, 2], dtype=np.int64)
    )
    assert lengths.tolist() == [1, 1]
    assert out_keys.tolist() == [5, 7]
    assert out_weights.tolist() == [1.0, 0.75]


@pytest.mark.parametrize("dense_cells", [1 << 20, 0])
def test_entries_of_no_rows(dense_cells):
    groups = np.zeros((2, 3), dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    lengths, out_keys, out_weights = group_entries(
        GroupMatrix(groups, 1), empty, empty, np.ones(3), np.array([0]), dense_cells
    )
    assert lengths.tolist() == [0] and len(out_keys) == 0 and len(out_weights) == 0


def test_arguments_that_would_reach_out_of_bounds_are_refused():
    groups = np.array([[0, 1]], dtype=np.int64)
    rows = np.arange(2, dtype=np.int64)
    ones = np.ones(2)
    with pytest.raises(ValueError, match="group numbers"):
        GroupMatrix(groups, 1)
    checked = GroupMatrix(groups, 2)
    with pytest.raises(ValueError, match="read-only"):
        checked.matrix[0, 0] = 7  # checked once, so it must not change after
    with pytest.raises(ValueError, match="row numbers"):
        group_stats(checked, np.array([2]), rows, ones, ones)
    with pytest.raises(ValueError, match="weights has 1 values"):
        group_stats(checked, rows, rows, ones, ones[:1])
    with pytest.raises(TypeError, match="keys must be a contiguous 1-D int64"):
        group_entries(checked, rows, rows.astype(np.int32), ones, rows)
    with pytest.raises(ValueError, match="row numbers"):  # a live group past the end
        group_entries(checked, rows, rows, ones, np.array([5]))
    with pytest.raises(ValueError, match="keys span fewer"):  # a counter per key value
        group_entries(checked, rows, np.array([0, 2**40]), ones, rows)


@pytest.mark.parametrize("compiled", [pytest.param(True, marks=compiled_only), False])
@pytest.mark.parametrize("dense_cells", [1 << 20, 0])
def test_live_groups_must_be_strictly_increasing(monkeypatch, compiled, dense_cells):
    """A repeated live group would write its entries twice, past the room they are given."""
    if not compiled:
        monkeypatch.setattr(kernels, "_LIBRARY", None)  # the numpy formulation: same contract
    groups = GroupMatrix(np.zeros((1, 3), dtype=np.int64), 2)
    rows = np.arange(3, dtype=np.int64)
    keys = np.array([1, 2, 3], dtype=np.int64)  # three entries in group 0: room for three
    for live in ([0, 0], [0, 0, 0, 0], [1, 0]):
        with pytest.raises(ValueError, match="strictly increasing"):
            group_entries(groups, rows, keys, np.ones(3), np.array(live), dense_cells)
    lengths, out_keys, _ = group_entries(groups, rows, keys, np.ones(3), np.array([0, 1]))
    assert lengths.tolist() == [3, 0] and out_keys.tolist() == [1, 2, 3]


@compiled_only
@pytest.mark.parametrize("dense_cells", [1 << 20, 0])
def test_the_compiled_entries_loop_stops_at_its_capacity(dense_cells):
    """The C function itself, past the wrapper's checks: it never writes past ``capacity``."""
    assert kernels.COMPILED
    matrix = np.zeros((1, 3), dtype=np.int64)
    rows = np.arange(3, dtype=np.int64)
    keys = np.array([1, 2, 3], dtype=np.int64)
    weights = np.ones(3)
    live = np.zeros(4, dtype=np.int64)  # group 0 four times: twelve entries
    lengths = np.zeros(4, dtype=np.int64)
    out_keys = np.full(8, -7, dtype=np.int64)  # room for 3, then a guard the loop must not touch
    out_weights = np.full(8, -7.0)
    address = kernels._address
    by_row = np.ascontiguousarray(matrix.T, dtype=np.int32)
    status = kernels._LIBRARY.segwatch_group_entries(
        address(matrix), address(by_row), 1, 3, address(rows), address(keys), 3, address(weights),
        address(live), 4, 1, dense_cells, kernels.MAX_KEY_RANGE, 3,
        address(lengths), address(out_keys), address(out_weights),
    )  # fmt: skip
    assert status == kernels._NO_ROOM
    assert out_keys[3:].tolist() == [-7] * 5 and out_weights[3:].tolist() == [-7.0] * 5


# -- the span reader's loops ---------------------------------------------------------------


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


_FIELDS = st.one_of(
    st.builds(lambda n, v: _field(n, 0, _varint(v)), st.integers(1, 40), st.integers(0, 2**64 - 1)),
    st.builds(lambda n, b: _field(n, 1, b), st.integers(1, 40), st.binary(min_size=8, max_size=8)),
    st.builds(lambda n, b: _field(n, 2, _varint(len(b)) + b), st.integers(1, 2**20),
              st.binary(max_size=40)),
    st.builds(lambda n, b: _field(n, 5, b), st.integers(1, 40), st.binary(min_size=4, max_size=4)),
    st.binary(max_size=6),  # anything: mostly irregular
)  # fmt: skip


def _joined(messages: list[bytes]):
    """The messages one after the other in a padded buffer (as the scan joins spans),
    and where each starts and ends."""
    from segwatch.collector.decode.span_table import PADDING

    lengths = np.array([len(m) for m in messages], dtype=np.int64)
    buf = np.frombuffer(b"".join(messages) + bytes(PADDING), dtype=np.uint8)
    end = np.cumsum(lengths)
    return buf, end - lengths, end


@compiled_only
@settings(max_examples=300, deadline=None)
@given(spans=st.lists(st.lists(_FIELDS, max_size=6).map(b"".join), max_size=6))
# A 10-byte tag with bit 63 set: the numpy walk shifted it as a signed number (found by
# bench/sanitize.sh's 3,000 examples).
@example(spans=[b"\x80" * 9 + b"\x01\x00"])
def test_compiled_span_walk_equals_the_numpy_walk(spans):
    from segwatch.collector.decode.span_table import checked_fields, numpy_walk_fields
    from segwatch.collector.decode.wire import NotSimple

    buf, start, end = _joined(spans)
    try:
        expected = numpy_walk_fields(buf, start, end)
    except NotSimple:
        expected = None
    walked = kernels.walk_fields(buf, start, end)
    if expected is None:  # irregular: or regular but refused by the schema checks after
        if walked is not None:
            with pytest.raises(NotSimple):
                checked_fields(*walked)
        return
    assert walked is not None
    for got, want in zip(walked, (expected.span, expected.number, expected.wire_type,
                                  expected.start, expected.stop), strict=True):  # fmt: skip
        np.testing.assert_array_equal(got, want)


@compiled_only
@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=400),
    slices=st.lists(st.tuples(st.integers(0, 399), st.integers(0, 120)), max_size=60),
)
def test_compiled_factorize_equals_numpy(data, slices):
    from segwatch.collector.decode.span_table import PADDING
    from segwatch.collector.decode.wire import factorize_slices, numpy_factorize_slices

    text = data * 3  # repeats: equal slices at other places
    buf = np.frombuffer(text + bytes(PADDING), dtype=np.uint8)  # padded, as the scan's buffer
    bounded = [(min(s, len(text)), n) for s, n in slices]
    start = np.array([s for s, _ in bounded], dtype=np.int64)
    length = np.array([min(n, len(text) - s) for s, n in bounded], dtype=np.int64)
    codes, distinct = factorize_slices(buf, start, length)
    expected_codes, expected_distinct = numpy_factorize_slices(buf, start, length)
    slices_bytes = [buf[s : s + n].tobytes() for s, n in zip(start, length, strict=True)]
    assert [distinct[c] for c in codes.tolist()] == slices_bytes
    assert [expected_distinct[c] for c in expected_codes.tolist()] == slices_bytes
    assert len(set(distinct)) == len(distinct) == len(expected_distinct)
    assert distinct == list(dict.fromkeys(slices_bytes))  # numbered as they first appear


def test_factorize_tells_apart_strings_that_share_a_hash_slot():
    from segwatch.collector.decode.span_table import PADDING
    from segwatch.collector.decode.wire import factorize_slices

    # 5,000 distinct 4-byte strings, each twice: slots are shared, strings must be compared.
    values = np.arange(5000, dtype="<u4")
    text = values.tobytes() * 2
    buf = np.frombuffer(text + bytes(PADDING), dtype=np.uint8)
    start = np.arange(0, len(text), 4, dtype=np.int64)
    codes, distinct = factorize_slices(buf, start, np.full(len(start), 4, dtype=np.int64))
    assert len(distinct) == 5000
    assert codes.tolist() == list(range(5000)) * 2


@pytest.mark.parametrize("dtype", [np.float64, np.uint64])
def test_fixed64_values_at_any_offset(dtype):
    rng = np.random.default_rng(3)
    values = rng.normal(size=50).astype("<f8") if dtype == np.float64 else rng.integers(
        0, 2**63, 50, dtype="<u8")  # fmt: skip
    raw = bytearray(rng.integers(0, 256, 700, dtype=np.uint8).tobytes())
    at = np.sort(rng.choice(np.arange(0, 700 - 8, 9), 50, replace=False)).astype(np.int64)
    for value, offset in zip(values, at.tolist(), strict=True):  # unaligned, little-endian
        raw[offset : offset + 8] = value.tobytes()
    buf = np.frombuffer(bytes(raw), dtype=np.uint8)
    assert kernels.read_fixed64(buf, at, dtype).tolist() == values.tolist()
    with pytest.raises(ValueError, match="within the buffer"):
        kernels.read_fixed64(buf, np.array([len(buf) - 7], dtype=np.int64), dtype)


def _key_value(key: str, kind: str, value: object) -> bytes:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    any_value = AnyValue()
    if kind == "array":
        any_value.array_value.values.add().int_value = 1
    elif kind not in ("empty", "none"):
        setattr(any_value, kind, value)
    message = KeyValue(key=key)
    if kind != "none":
        message.value.CopyFrom(any_value)
    return message.SerializeToString()


_KEY_VALUES = st.one_of(
    st.builds(_key_value, st.text(max_size=70), st.just("string_value"), st.text(max_size=30)),
    st.builds(_key_value, st.text(max_size=10), st.just("bool_value"), st.booleans()),
    st.builds(_key_value, st.text(max_size=10), st.just("int_value"),
              st.integers(-(2**63), 2**63 - 1)),
    st.builds(_key_value, st.text(max_size=10), st.just("double_value"), st.floats()),
    st.builds(_key_value, st.text(max_size=10), st.just("bytes_value"), st.binary(max_size=5)),
    st.builds(_key_value, st.text(max_size=10), st.sampled_from(["array", "empty", "none"]),
              st.none()),
    st.binary(max_size=12),  # anything: mostly irregular
)  # fmt: skip


@compiled_only
@settings(max_examples=300, deadline=None)
@given(messages=st.lists(_KEY_VALUES, min_size=1, max_size=8))
def test_compiled_key_value_reader_equals_numpy(messages):
    from segwatch.collector.decode.key_values import numpy_key_values
    from segwatch.collector.decode.wire import KEY_WIDTH, NotSimple

    buf, start, end = _joined(messages)
    try:
        expected = numpy_key_values(buf, start, end)
    except NotSimple:
        expected = None
    got = kernels.read_key_values(buf, start, end, KEY_WIDTH)
    assert (got is None) == (expected is None)
    if got is not None and expected is not None:
        for ours, theirs in zip(got, expected, strict=True):
            np.testing.assert_array_equal(ours, theirs)


@compiled_only
@pytest.mark.parametrize(
    "value",
    [
        b"\x18\x05\x10\x01",  # an int, then a bool: two fields in one AnyValue
        b"\x10\x01\x10\x00",  # a bool twice
        b"\x0a\x01ab",  # a string one byte shorter than the value
        b"\x21" + bytes(9),  # a double with a byte too many
        b"\x2a\x00",  # an empty array (arrays are batch spans: the reference decoder's)
    ],
)
def test_key_values_that_are_not_simple_go_to_the_reference_decoder(value):
    from segwatch.collector.decode.key_values import numpy_key_values
    from segwatch.collector.decode.wire import KEY_WIDTH, NotSimple

    buf, start, end = _joined([b"\x0a\x01k\x12" + bytes([len(value)]) + value])
    assert kernels.read_key_values(buf, start, end, KEY_WIDTH) is None
    with pytest.raises(NotSimple):
        numpy_key_values(buf, start, end)


@compiled_only
def test_the_span_reader_loops_refuse_positions_outside_the_buffer():
    buf = np.zeros(16, dtype=np.uint8)
    inside, past = np.array([0], dtype=np.int64), np.array([17], dtype=np.int64)
    with pytest.raises(ValueError, match="within the buffer"):
        kernels.walk_fields(buf, inside, past)
    with pytest.raises(ValueError, match="within the buffer"):
        kernels.walk_fields(buf, np.array([5]), np.array([4]))  # ends before it starts
    with pytest.raises(ValueError, match="within the buffer"):
        kernels.read_key_values(buf, np.array([-1]), inside, 64)
    with pytest.raises(ValueError, match="within the buffer"):
        kernels.factorize_slices(buf, np.array([10]), np.array([7]))
    with pytest.raises(ValueError, match="within the buffer"):
        kernels.factorize_slices(buf, np.array([0]), np.array([-1]))
    assert kernels.factorize_slices(buf, np.array([10]), np.array([6]))[0].tolist() == [0]
