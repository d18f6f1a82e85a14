"""Every (dimension, minute, segment) group of one model's calls, and a quantity's rows over them.

:class:`SegmentGroups` numbers the groups of every segment dimension at once
(one row of a matrix per dimension); :func:`quantity_sums` sums one
quantity (:mod:`.quantity_values`) over all of them in one pass of the
compiled loops (:func:`segwatch.collector.kernels.group_stats` and
:func:`~segwatch.collector.kernels.group_entries`, or their numpy
formulation), and :func:`append_quantity_rows` appends one mergeable row per
live group to the :class:`AggregateRowsBuilder`.

No shared state: :func:`quantity_sums` only reads the groups, so several
quantities may be summed on threads at once; the rest runs on the
aggregating thread, with arrays it owns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from segwatch.collector.kernels import GroupMatrix, group_entries, group_stats
from segwatch.collector.model_calls import ModelCallBatch, ModelKey
from segwatch.collector.segment.segments import SegmentDimension
from segwatch.collector.store.aggregate_rows import AggregateRowsBuilder, GroupEntries

from .exemplars import ExemplarMemory
from .quantity_values import QuantityValues

__all__ = ["QuantitySums", "SegmentGroups", "append_quantity_rows", "quantity_sums"]


@dataclass
class SegmentGroups:
    """Every (dimension, minute, segment) group of one model's rows, numbered globally.

    ``groups.matrix[d, i]`` is the group of row ``i`` in dimension ``d``;
    groups of dimension ``d`` occupy one contiguous range, so one pass over
    the matrix aggregates every dimension at once. Per live group (at
    least one call) it knows its dimension, segment, minute and exemplar, as
    codes into small dictionaries.
    """

    groups: GroupMatrix  # checked once, for the compiled loops
    weights: npt.NDArray[np.float64]  # per row
    total: int
    counts: npt.NDArray[np.float64]  # weighted calls per group
    sampled: npt.NDArray[np.int64]  # rows received per group
    live: npt.NDArray[np.int64]  # groups with at least one call
    live_dim: npt.NDArray[np.int64]  # dimension index of each live group
    dim_names: list[str]
    bucket_start: npt.NDArray[np.int64]  # per live group
    segment_codes: npt.NDArray[np.int64]  # per live group, into segment_names
    segment_names: list[str]  # every dimension's labels, one after the other
    exemplars: list[str]  # per live group: the trace id (hex) of its first (preferred) call

    @classmethod
    def build(
        cls,
        dimensions: list[SegmentDimension],
        minute_codes: npt.NDArray[np.int64],
        bucket_seconds: npt.NDArray[np.int64],
        rows: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64],
        batch: ModelCallBatch,
        preferred: npt.NDArray[np.bool_] | None = None,
        remembered: tuple[ModelKey, ExemplarMemory] | None = None,
    ) -> SegmentGroups:
        """The groups of ``rows`` (one model's rows of ``batch``). A group's exemplar is its
        first call among ``preferred`` (per row of ``rows``) if it has one, else the one a
        stored flush gave it (``remembered``: the model and the memory; the choices made
        here are staged there), else its first call."""
        n_minutes = len(bucket_seconds)
        sizes = np.array([len(d.labels) for d in dimensions], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes * n_minutes)[:-1]]).astype(np.int64)
        matrix = np.vstack(
            [minute_codes * size + d.codes + offset
             for d, size, offset in zip(dimensions, sizes.tolist(), offsets.tolist(), strict=True)]
        )  # fmt: skip
        total = int(offsets[-1] + sizes[-1] * n_minutes)
        flat = matrix.ravel()
        sampled = np.bincount(flat, minlength=total)
        if bool(np.all(weights == 1.0)):  # unsampled: a sum of ones is the count, exactly
            counts = sampled.astype(np.float64)
        else:
            counts = np.asarray(
                np.bincount(flat, weights=np.tile(weights, len(dimensions)), minlength=total),
                dtype=np.float64,
            )
        live = np.flatnonzero(sampled)
        live_dim = np.searchsorted(offsets, live, side="right") - 1
        local = live - offsets[live_dim]
        size_of = sizes[live_dim]
        label_offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        n = len(rows)
        first = _first_calls(flat, total, n, len(dimensions), preferred)
        trace_ids = batch.trace_ids
        groups = cls(
            groups=GroupMatrix(matrix, total),
            weights=weights,
            total=total,
            counts=counts,
            sampled=sampled,
            live=live,
            live_dim=live_dim,
            dim_names=[d.name for d in dimensions],
            bucket_start=bucket_seconds[local // size_of],
            segment_codes=label_offsets[live_dim] + local % size_of,
            segment_names=[label for d in dimensions for label in d.labels],
            exemplars=[trace_ids[r].hex() for r in rows[first[live] % max(n, 1)].tolist()],
        )
        if remembered is not None:
            groups.recall_exemplars(*remembered, plain=(first[live] >= n).tolist())
        return groups

    def recall_exemplars(self, model: ModelKey, memory: ExemplarMemory, plain: list[bool]) -> None:
        """Give each live group with no preferred call (``plain``) the exemplar a stored
        flush gave it, if any; stage every other group's own choice in ``memory``."""
        dims = [self.dim_names[d] for d in self.live_dim.tolist()]
        segments = [self.segment_names[c] for c in self.segment_codes.tolist()]
        minutes = self.bucket_start.tolist()
        for i, (dim, segment, minute) in enumerate(zip(dims, segments, minutes, strict=True)):
            key = (*model, dim, segment, int(minute))
            known = memory.recall(key) if plain[i] else None
            if known is None:
                memory.stage(key, self.exemplars[i])
            else:
                self.exemplars[i] = known


@dataclass
class QuantitySums:
    """One quantity summed over the live groups it is kept in (:func:`quantity_sums`)."""

    kept: npt.NDArray[np.int64]  # which live groups (indices into SegmentGroups.live)
    numbers: dict[str, npt.NDArray[Any]]  # count, sampled, missing, ... per kept group
    histogram: GroupEntries
    categories: GroupEntries


def quantity_sums(
    quantity: QuantityValues, groups: SegmentGroups, keep: npt.NDArray[np.bool_]
) -> QuantitySums:
    """One quantity's sums in every live group where ``keep`` holds, through the compiled
    loops (which leave the interpreter's lock free: quantities can be summed on several
    threads at once). Reads ``groups`` only."""
    kept = np.flatnonzero(keep)
    live = groups.live[kept]
    w = groups.weights
    checked = groups.groups
    everywhere = len(quantity.present) == checked.rows  # positions: sorted, distinct
    present, numeric_count, sums, sum_sq, minima, maxima = group_stats(
        checked, _NONE if everywhere else quantity.present, quantity.number_pos,
        quantity.numbers, w,
    )  # fmt: skip
    if everywhere:  # every row has a value: its groups' weights, summed in the same order
        present = groups.counts
    histogram = group_entries(
        checked, quantity.number_pos, quantity.hist_keys.astype(np.int64), w, live
    )
    categories = group_entries(checked, quantity.label_pos, quantity.label_codes, w, live)
    counts = groups.counts[live]
    numbers = {
        "count": counts,
        "sampled": groups.sampled[live],
        "missing": counts - present[live],
        "numeric_count": numeric_count[live],
        "sum": sums[live],
        "sum_sq": sum_sq[live],
        "min": minima[live],
        "max": maxima[live],
    }
    return QuantitySums(kept, numbers, GroupEntries(*histogram), GroupEntries(*categories))


def append_quantity_rows(
    out: AggregateRowsBuilder,
    model: ModelKey,
    quantity: QuantityValues,
    groups: SegmentGroups,
    sums: QuantitySums,
) -> None:
    """Append the rows of one quantity's :func:`quantity_sums`."""
    kept = sums.kept
    out.add(
        model,
        quantity.name,
        dims=(groups.live_dim[kept], groups.dim_names),
        segments=(groups.segment_codes[kept], groups.segment_names),
        exemplars=(kept, groups.exemplars),
        bucket_start=groups.bucket_start[kept],
        numbers=sums.numbers,
        histogram=sums.histogram,
        categories=sums.categories,
        category_names=quantity.label_names,
    )


_NONE = np.zeros(0, dtype=np.int64)


def _first_calls(
    flat: npt.NDArray[np.int64],
    total: int,
    n: int,
    n_dimensions: int,
    preferred: npt.NDArray[np.bool_] | None,
) -> npt.NDArray[np.int64]:
    """Per group (of ``total``), the rank of its first call, its exemplar: a preferred one
    first. Ranks [0, n) are the preferred rows' positions, [n, 2n) the others'; 2n, none.
    ``flat``: the group matrix (one row of ``n`` per dimension), raveled."""
    rank = np.arange(n, dtype=np.int64)
    if preferred is not None:
        rank = rank + n * ~preferred
    first = np.full(total, 2 * n, dtype=np.int64)
    np.minimum.at(first, flat, np.tile(rank, n_dimensions))
    return first
