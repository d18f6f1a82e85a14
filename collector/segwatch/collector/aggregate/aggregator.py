"""Per-segment aggregation of a batch of model calls, columnar with numpy.

For every model, minute bucket, segment (of every dimension, plus ``__all__``)
and quantity, one :class:`AggregateRows` row holds a mergeable state: count,
missing, numeric count, sum, sum of squares, min, max, the log histogram, the
category counts and a few exemplar trace ids. Rows from different batches or
collectors for the same key are merged by ClickHouse (AggregatingMergeTree),
so this module never keeps state between batches except the category
vocabularies.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from segwatch.collector.kernels import GroupMatrix, group_entries, group_stats
from segwatch.collector.model_calls import Column, ModelCallBatch, ModelKey
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.collector.segment.segments import (
    OTHER,
    CategoryVocabulary,
    SegmentDimension,
    cross_dimension,
    positions_in,
    segment_dimension,
    whole_model,
)
from segwatch.collector.store.aggregate_rows import (
    AGGREGATE_COLUMNS,
    AGGREGATE_SCHEMA,
    AggregateRows,
    AggregateRowsBuilder,
    GroupEntries,
)

from .histogram import LogHistogram, log_histogram

__all__ = ["AGGREGATE_COLUMNS", "AGGREGATE_SCHEMA", "AggregateRows", "SegmentAggregator"]

_logger = logging.getLogger(__name__)
NS_PER_MINUTE = 60 * 1_000_000_000


@dataclass
class _Quantity:
    """One quantity's values for the rows of one model, as positions and arrays."""

    name: str
    present: npt.NDArray[np.int64]  # positions with any value
    number_pos: npt.NDArray[np.int64]  # positions with a finite number
    numbers: npt.NDArray[np.float64]
    hist_keys: npt.NDArray[np.int16]
    label_pos: npt.NDArray[np.int64]  # positions with a label (text, bool, NaN, inf)
    label_codes: npt.NDArray[np.int64]
    label_names: list[str]


class SegmentAggregator:
    """Turns :class:`ModelCallBatch` es into :class:`AggregateRows`.

    Thread-safe: receiver threads may call :meth:`aggregate` concurrently; the
    only shared state is the per-dimension category vocabularies.
    """

    def __init__(self, plan: SegmentationPlan | None = None) -> None:
        self.plan = plan or SegmentationPlan()
        self._histogram = log_histogram(self.plan.config.storage.histogram_accuracy)
        self._vocabularies: dict[tuple[str, str], CategoryVocabulary] = {}
        self._lock = threading.Lock()
        self._known: dict[str, set[str]] = {}  # fields seen per model
        self.vocabularies_full = 0  # vocabularies not kept: MAX_VOCABULARIES reached
        self.unaggregated: Counter[str] = Counter()
        """Fields left out by ``segments.max_fields_per_model``, by model (once a batch)."""
        self.folded: Counter[tuple[str, str]] = Counter()
        """Rows whose value was folded into ``__other__``, by (model, dimension)."""
        self._admitted: set[tuple[str, str]] = set()  # dimensions segmented, by model
        self._segments: Counter[str] = Counter()  # segments reserved, by model
        self.unsegmented: Counter[str] = Counter()
        """Dimensions refused by ``segments.max_per_model``, by model (counted once a batch)."""

    def _admit(self, model: str, dimension: str) -> bool:
        """Whether ``dimension`` is segmented: it fits the model's segment budget.

        Each dimension reserves its top-k plus ``__other__`` and ``MISSING``
        (a numeric one, its buckets: about as many) when first seen; declared
        ones always fit. The budget bounds what clients inventing feature
        names can create; the first dimensions seen keep their segments.
        """
        key = (model, dimension)
        if key in self._admitted:
            return True
        with self._lock:
            if key in self._admitted:
                return True
            cost = self.plan.top_k(model, dimension) + 2
            budget = self.plan.config.segments.max_per_model
            if self._segments[model] + cost > budget and (
                dimension not in self.plan.declared_fields(model)
            ):
                if not self.unsegmented[model]:
                    _logger.warning(
                        "model %r has %d segments (segments.max_per_model %d): %s and further "
                        "new dimensions are not segmented",
                        model, self._segments[model], budget, dimension,
                    )  # fmt: skip
                self.unsegmented[model] += 1
                return False
            self._segments[model] += cost
            self._admitted.add(key)
            return True

    def _vocabulary(self, model: str, dimension: str) -> CategoryVocabulary:
        """The field's remembered top values; past MAX_VOCABULARIES, a fresh one each batch.

        Clients choose field names: remembering a vocabulary for every name
        ever sent would grow without bound. Past the cap a field's top values
        are this batch's own (its category counts still merge).
        """
        key = (model, dimension)
        vocabulary = self._vocabularies.get(key)
        if vocabulary is None:
            top_k = self.plan.top_k(model, dimension)
            with self._lock:
                if len(self._vocabularies) >= MAX_VOCABULARIES:
                    if not self.vocabularies_full:
                        _logger.warning(
                            "%d field vocabularies remembered: new fields' top values are per "
                            "batch from now on", MAX_VOCABULARIES,
                        )  # fmt: skip
                    self.vocabularies_full += 1
                    return CategoryVocabulary(top_k)
                vocabulary = self._vocabularies.setdefault(key, CategoryVocabulary(top_k))
        return vocabulary

    def _model_columns(
        self, batch: ModelCallBatch, model: str, rows: npt.NDArray[np.int64]
    ) -> dict[str, Column]:
        """Every field of ``model``: in this batch, declared in the config, or seen before.

        A field absent from a batch still gets its rows (all MISSING), so the
        aggregates of any split of the calls merge to those of all of them.
        Past ``segments.max_fields_per_model`` fields (the declared ones always
        fit), a new field is not aggregated: every field multiplies the rows
        each segment writes, and clients choose the names.
        """
        columns: dict[str, Column] = {}
        for name, column in (*batch.quantities.items(), *batch.contexts.items()):
            if _has_rows(column, rows):
                columns[name] = column
        limit = self.plan.config.segments.max_fields_per_model
        declared = self.plan.declared_fields(model)
        with self._lock:
            known = self._known.setdefault(model, set())
            for name in sorted(columns.keys() - known - declared):  # the same choice everywhere
                if len(known) < limit:
                    known.add(name)
            expected = known | declared
            dropped = columns.keys() - expected
            if dropped:
                if not self.unaggregated[model]:
                    _logger.warning(
                        "model %r has %d fields (segments.max_fields_per_model): %s and further "
                        "new fields are not aggregated", model, len(known), sorted(dropped)[0],
                    )  # fmt: skip
                self.unaggregated[model] += len(dropped)
        for name in dropped:
            del columns[name]
        for name in expected - columns.keys():
            columns[name] = _EMPTY
        return dict(sorted(columns.items()))

    def aggregate(self, batch: ModelCallBatch) -> AggregateRows:
        out = AggregateRowsBuilder()
        if not len(batch):
            return out.build()
        model_index = np.asarray(batch.model_index, dtype=np.int64)
        start_ns = np.asarray(batch.start_ns, dtype=np.int64)
        weights = np.asarray(batch.weights, dtype=np.float64)
        for index, model in enumerate(batch.models):
            rows = np.flatnonzero(model_index == index)
            self._aggregate_model(batch, model, rows, start_ns[rows], weights[rows], out)
        return out.build()

    def _aggregate_model(
        self,
        batch: ModelCallBatch,
        model: ModelKey,
        rows: npt.NDArray[np.int64],
        start_ns: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64],
        out: AggregateRowsBuilder,
    ) -> None:
        minutes, minute_codes = np.unique(start_ns // NS_PER_MINUTE, return_inverse=True)
        columns = self._model_columns(batch, model[0], rows)
        dimensions = [whole_model(len(rows))]
        plan = self.plan
        observed: set[str] = set()  # dimensions whose vocabulary this batch updated
        for name, column in columns.items():
            if (
                name.startswith(("feature.", "context."))
                and plan.is_dimension(model[0], name)
                and self._admit(model[0], name)
            ):
                vocabulary = self._vocabulary(model[0], name)
                dimension, folded = segment_dimension(
                    name, column, rows, vocabulary, plan.buckets(model[0], name)
                )
                observed.add(name)
                if folded:
                    with self._lock:
                        self.folded[(model[0], name)] += folded
                dimensions.append(dimension)
        by_name = {d.name: d for d in dimensions}
        for first, second in plan.crosses(model[0], set(by_name)):
            dimensions.append(cross_dimension(by_name[first], by_name[second]))
        quantities = [
            _quantity(
                name,
                column,
                rows,
                self._vocabulary(model[0], name),
                name in observed,
                self._histogram,
            )
            for name, column in columns.items()
            if not name.startswith("context.")
        ]
        if not quantities:
            return
        groups = _SegmentGroups.build(dimensions, minute_codes, minutes * 60, rows, weights, batch)
        own_dimension = {d.name: i for i, d in enumerate(dimensions)}
        for quantity in quantities:
            # A dimension split by itself says nothing new: skip that pair.
            skip = own_dimension.get(quantity.name, -1)
            _append_quantity(out, model, quantity, groups, groups.live_dim != skip)


@dataclass
class _SegmentGroups:
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
    exemplars: list[str]  # per live group: the trace id (hex) of its first call

    @classmethod
    def build(
        cls,
        dimensions: list[SegmentDimension],
        minute_codes: npt.NDArray[np.int64],
        bucket_seconds: npt.NDArray[np.int64],
        rows: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64],
        batch: ModelCallBatch,
    ) -> _SegmentGroups:
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
        counts = np.asarray(
            np.bincount(flat, weights=np.tile(weights, len(dimensions)), minlength=total),
            dtype=np.float64,
        )
        live = np.flatnonzero(sampled)
        live_dim = np.searchsorted(offsets, live, side="right") - 1
        local = live - offsets[live_dim]
        size_of = sizes[live_dim]
        label_offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        # The first call of each group is its exemplar.
        first = np.full(total, len(rows), dtype=np.int64)
        np.minimum.at(first, flat, np.tile(np.arange(len(rows), dtype=np.int64), len(dimensions)))
        trace_ids = batch.trace_ids
        return cls(
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
            exemplars=[trace_ids[r].hex() for r in rows[first[live]].tolist()],
        )


def _has_rows(column: Column, rows: npt.NDArray[np.int64]) -> bool:
    """Whether ``column`` has a value in any of ``rows`` (one model's rows)."""
    for column_rows in (column.number_data()[0], column.label_codes()[0]):
        if len(column_rows) and positions_in(rows, column_rows)[1].any():
            return True
    return False


MAX_VOCABULARIES = 20_000
"""Field vocabularies kept across batches, all models together (each holds at most
``max(64, 20 * top_k)`` values with their counts)."""

_EMPTY = Column()


def _quantity(
    name: str,
    column: Column,
    rows: npt.NDArray[np.int64],
    vocabulary: CategoryVocabulary,
    observed: bool,
    histogram: LogHistogram,
) -> _Quantity:
    """Positions (within ``rows``) and values of one quantity for one model."""
    number_rows, numbers = column.number_data()
    label_rows, label_codes, names = column.label_codes()
    number_pos, number_found = positions_in(rows, number_rows)
    label_pos, label_found = positions_in(rows, label_rows)
    numbers = numbers[number_found]
    number_pos = number_pos[number_found]
    finite = np.isfinite(numbers)
    codes = label_codes[label_found]
    label_positions = label_pos[label_found]
    if not finite.all():  # NaN and infinities are counted as categories
        odd = ~finite
        index = {label: code for code, label in enumerate(names)}
        names = list(names)
        special = [index.setdefault(_special_name(v), len(index)) for v in numbers[odd].tolist()]
        names.extend(list(index)[len(names) :])
        codes = np.concatenate([codes, np.asarray(special, dtype=np.int64)])
        label_positions = np.concatenate([label_positions, number_pos[odd]])
        numbers, number_pos = numbers[finite], number_pos[finite]
    label_names: list[str] = []
    if len(codes):
        codes, label_names = _fold(codes, names, vocabulary, observed)
    return _Quantity(
        name=name,
        present=_union(number_pos, label_positions, len(rows)),
        number_pos=number_pos,
        numbers=numbers,
        hist_keys=histogram.keys(numbers),
        label_pos=label_positions,
        label_codes=codes,
        label_names=label_names,
    )


def _union(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    """Sorted distinct positions in ``a`` or ``b`` (all below ``n``), without a sort."""
    mask = np.zeros(n, dtype=bool)
    mask[a] = True
    mask[b] = True
    return np.flatnonzero(mask)


def _fold(
    codes: npt.NDArray[np.int64], names: list[str], vocabulary: CategoryVocabulary, observed: bool
) -> tuple[npt.NDArray[np.int64], list[str]]:
    """The labels ``names[codes]`` outside the top K become ``__other__``; maps stay bounded.

    Returns codes into the labels that occur (and ``__other__`` if any was
    folded), in ``names`` order. A dimension's vocabulary was already updated
    when it was segmented (``observed``); other quantities (outputs, fields
    that are not dimensions) update theirs here.
    """
    all_counts = np.bincount(codes, minlength=len(names))
    present = np.flatnonzero(all_counts).tolist()
    if observed:
        kept = vocabulary.kept
    else:
        kept = vocabulary.observe([names[i] for i in present], all_counts[present].tolist())
    keep = kept | _SPECIAL_NAMES
    labels: dict[str, int] = {}
    mapping = np.zeros(len(names), dtype=np.int64)
    mapping[present] = [
        labels.setdefault(names[i] if names[i] in keep else OTHER, len(labels)) for i in present
    ]
    return mapping[codes], list(labels)


_SPECIAL_NAMES = frozenset({"nan", "inf", "-inf"})  # from numbers: never folded


def _special_name(value: float) -> str:
    if value != value:
        return "nan"
    return "inf" if value > 0 else "-inf"


def _append_quantity(
    out: AggregateRowsBuilder,
    model: ModelKey,
    quantity: _Quantity,
    groups: _SegmentGroups,
    keep: npt.NDArray[np.bool_],
) -> None:
    """Append the rows of one quantity in every live group where ``keep`` holds."""
    kept = np.flatnonzero(keep)
    live = groups.live[kept]
    w = groups.weights
    checked = groups.groups
    present, numeric_count, sums, sum_sq, minima, maxima = group_stats(
        checked, quantity.present, quantity.number_pos, quantity.numbers, w
    )
    histogram = group_entries(
        checked, quantity.number_pos, quantity.hist_keys.astype(np.int64), w, live
    )
    categories = group_entries(checked, quantity.label_pos, quantity.label_codes, w, live)
    counts = groups.counts[live]
    out.add(
        model,
        quantity.name,
        dims=(groups.live_dim[kept], groups.dim_names),
        segments=(groups.segment_codes[kept], groups.segment_names),
        exemplars=(kept, groups.exemplars),
        bucket_start=groups.bucket_start[kept],
        numbers={
            "count": counts,
            "sampled": groups.sampled[live],
            "missing": counts - present[live],
            "numeric_count": numeric_count[live],
            "sum": sums[live],
            "sum_sq": sum_sq[live],
            "min": minima[live],
            "max": maxima[live],
        },
        histogram=GroupEntries(*histogram),
        categories=GroupEntries(*categories),
        category_names=quantity.label_names,
    )
