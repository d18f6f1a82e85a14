"""Per-segment aggregation of a batch of model calls, columnar with numpy.

For every model, minute bucket, segment (of every dimension, plus ``__all__``)
and quantity, one :class:`AggregateRows` row holds a mergeable state: count,
missing, numeric count, sum, sum of squares, min, max, the log histogram, the
category counts and a few exemplar trace ids. Rows from different batches or
collectors for the same key are merged by ClickHouse (AggregatingMergeTree),
so this module never keeps state between batches except the category
vocabularies.

:class:`SegmentAggregator` decides what is aggregated (the fields each model
may have, the dimensions that fit its segment budget, the vocabularies that
fold categories into the top K) and runs the loop over models; each
quantity's values are prepared by :mod:`.quantity_values` and summed over
every segment at once by :mod:`.segment_groups`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Executor
from itertools import repeat

import numpy as np
import numpy.typing as npt

from segwatch.collector.model_calls import Column, ModelCallBatch, ModelKey
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.collector.segment.segments import (
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
)

from .exemplars import ExemplarMemory
from .histogram import log_histogram
from .quantity_values import quantity_values
from .segment_groups import QuantitySums, SegmentGroups, append_quantity_rows, quantity_sums

__all__ = ["AGGREGATE_COLUMNS", "AGGREGATE_SCHEMA", "AggregateRows", "SegmentAggregator"]

_logger = logging.getLogger(__name__)
NS_PER_MINUTE = 60 * 1_000_000_000


class SegmentAggregator:
    """Turns :class:`ModelCallBatch` es into :class:`AggregateRows`.

    Thread-safe: in the collector the call buffer's flusher thread calls
    :meth:`aggregate`, but any number of threads may; what it keeps between
    batches (the category vocabularies, the fields and dimensions admitted
    per model, the counters) is guarded by locks. With an ``executor`` (a
    backfill's, on two cores), each batch's quantities are summed there,
    several at once (the compiled loops leave the interpreter's lock free);
    the rows are the same, in the same order.
    """

    def __init__(
        self, plan: SegmentationPlan | None = None, executor: Executor | None = None
    ) -> None:
        self.plan = plan or SegmentationPlan()
        self._executor = executor  # the caller's: it sums quantities there, several at once
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

    def aggregate(
        self,
        batch: ModelCallBatch,
        prefer: npt.NDArray[np.bool_] | None = None,
        exemplars: ExemplarMemory | None = None,
    ) -> AggregateRows:
        """The batch's aggregate rows. ``prefer`` (per row): calls to take as exemplars
        before the others, e.g. those whose spans are written anyway (storage.traces);
        ``exemplars``: a group with none of those takes the exemplar this memory has for
        it, if any, before its first call (the choices are staged there; see
        :mod:`.exemplars`)."""
        out = AggregateRowsBuilder()
        if not len(batch):
            return out.build()
        model_index = np.asarray(batch.model_index, dtype=np.int64)
        start_ns = np.asarray(batch.start_ns, dtype=np.int64)
        weights = np.asarray(batch.weights, dtype=np.float64)
        for index, model in enumerate(batch.models):
            rows = np.flatnonzero(model_index == index)
            preferred = None if prefer is None else prefer[rows]
            self._aggregate_model(batch, model, rows, start_ns[rows], weights[rows], out,
                                  preferred, exemplars)  # fmt: skip
        return out.build()

    def _dimensions(
        self,
        model_name: str,
        columns: dict[str, Column],
        rows: npt.NDArray[np.int64],
        observed: set[str],
    ) -> list[SegmentDimension]:
        """The whole model, each segment dimension of ``model_name`` in ``columns`` (adding
        to ``observed`` those whose vocabulary this batch updated), then the crosses."""
        plan = self.plan
        dimensions = [whole_model(len(rows))]
        for name, column in columns.items():
            if (
                name.startswith(("feature.", "context."))
                and plan.is_dimension(model_name, name)
                and self._admit(model_name, name)
            ):
                vocabulary = self._vocabulary(model_name, name)
                dimension, folded = segment_dimension(
                    name, column, rows, vocabulary, plan.buckets(model_name, name)
                )
                observed.add(name)
                if folded:
                    with self._lock:
                        self.folded[(model_name, name)] += folded
                dimensions.append(dimension)
        by_name = {d.name: d for d in dimensions}
        for first, second in plan.crosses(model_name, set(by_name)):
            dimensions.append(cross_dimension(by_name[first], by_name[second]))
        return dimensions

    def _aggregate_model(
        self,
        batch: ModelCallBatch,
        model: ModelKey,
        rows: npt.NDArray[np.int64],
        start_ns: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64],
        out: AggregateRowsBuilder,
        preferred: npt.NDArray[np.bool_] | None = None,
        exemplars: ExemplarMemory | None = None,
    ) -> None:
        minutes, minute_codes = np.unique(start_ns // NS_PER_MINUTE, return_inverse=True)
        columns = self._model_columns(batch, model[0], rows)
        observed: set[str] = set()  # dimensions whose vocabulary this batch updated
        dimensions = self._dimensions(model[0], columns, rows, observed)
        quantities = [
            quantity_values(
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
        groups = SegmentGroups.build(
            dimensions, minute_codes, minutes * 60, rows, weights, batch, preferred,
            None if exemplars is None else (model, exemplars),
        )  # fmt: skip
        own_dimension = {d.name: i for i, d in enumerate(dimensions)}
        # A dimension split by itself says nothing new: skip that pair.
        keeps = [groups.live_dim != own_dimension.get(q.name, -1) for q in quantities]
        if self._executor is None:
            summed: Iterable[QuantitySums] = map(quantity_sums, quantities, repeat(groups), keeps)
        else:
            groups.groups.by_row  # noqa: B018 -- made once, here, rather than by every worker
            summed = self._executor.map(quantity_sums, quantities, repeat(groups), keeps)
        for quantity, sums in zip(quantities, summed, strict=True):
            append_quantity_rows(out, model, quantity, groups, sums)


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
