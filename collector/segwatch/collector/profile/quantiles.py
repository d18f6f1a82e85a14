"""Quantile buckets that live traffic and its profile share.

A numeric feature the config leaves to ``auto`` (zero config included), or
declares ``quantiles: N``, is bucketed at a profile's deciles (N-quantiles) once
a profile of its model is loaded. The edges are fixed when the profile is
loaded, and the profile's own rows are bucketed with them, so every numeric
segment live traffic gets has its counterpart in the profile:

- :func:`data_edges`: the first load of a profile (name, model) takes the
  quantiles of its own data, rounded to the digits a segment label shows
  (``[12.5, 40.1)``), so that the labels *are* the edges;
- :func:`stored_edges`: read back from the labels of the profile's stored
  segments: what a later load of another version of the same profile reuses,
  and what the collector's plan uses (:func:`refresh_quantile_buckets`), for
  the profile each model is compared with
  (:func:`~segwatch.collector.config.detector_specs.model_profiles`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from clickhouse_connect.driver.client import Client

from segwatch.collector.config.detector_specs import DEFAULT_PROFILE, model_profiles
from segwatch.collector.segment.plan import SegmentationPlan

__all__ = ["data_edges", "label_edges", "refresh_quantile_buckets", "stored_edges"]

Edges = dict[tuple[str, str], tuple[float, ...]]
"""Bucket edges per (model, dimension), as the plan's ``use_quantile_edges`` takes them."""

_EDGE_LABEL = re.compile(r"^(?:< (\S+)|>= (\S+)|\[(\S+), (\S+)\))$")


def _shown(value: float) -> float:
    """The value as an edge label shows it (``{:g}``: six significant digits)."""
    return float(f"{value:g}")


def data_edges(numbers: npt.NDArray[np.float64], count: int) -> tuple[float, ...]:
    """Edges at the ``count``-quantiles of the finite ``numbers``, as labels show them,
    strictly increasing (ties merge); empty when there is nothing to cut."""
    finite = numbers[np.isfinite(numbers)]
    if count < 2 or not len(finite):
        return ()
    cuts = np.quantile(finite, np.arange(1, count) / count, method="inverted_cdf")
    edges: list[float] = []
    for cut in cuts.tolist():
        value = _shown(cut)
        if not edges or value > edges[-1]:
            edges.append(value)
    return tuple(edges)


def label_edges(labels: list[str]) -> tuple[float, ...]:
    """The edges of edge-bucket labels (``< a``, ``[a, b)``, ``>= b``); others ignored."""
    found: set[float] = set()
    for label in labels:
        match = _EDGE_LABEL.match(label)
        if match is None:
            continue
        for text in match.groups():
            if text is not None:
                with contextlib.suppress(ValueError):
                    found.add(float(text))
    return tuple(sorted(found))


def stored_edges(
    client: Client,
    name: str,
    models: list[str],
    dimensions: Mapping[tuple[str, str], int],
    replaced_version: str | None = None,
) -> Edges:
    """The edges profile ``name`` of each of ``models`` was bucketed with, for the
    ``dimensions`` (``(model, feature.x)``) that want quantiles (any version of it but
    ``replaced_version``, the one a load is replacing)."""
    if not models or not dimensions:
        return {}
    rows = client.query(
        "SELECT model_name, segment_dim, groupUniqArray(segment_value) "
        "FROM ml_baseline_aggregates WHERE baseline_name = {name:String} "
        "AND has({models:Array(String)}, model_name) AND startsWith(segment_dim, 'feature.') "
        "AND position(segment_dim, '×') = 0 AND NOT ({replacing:UInt8} AND "
        "model_version = {replaced:String}) GROUP BY model_name, segment_dim",
        parameters={
            "name": name,
            "models": models,
            "replacing": int(replaced_version is not None),
            "replaced": replaced_version or "",
        },
    ).result_rows
    edges: Edges = {}
    for model, dimension, labels in rows:
        if (model, dimension) in dimensions:
            found = label_edges(list(labels))
            if found:
                edges[(model, dimension)] = found
    return edges


def refresh_quantile_buckets(client: Client, plan: SegmentationPlan) -> int:
    """Point ``plan`` at the edges of the profile each model is compared with; return
    how many (model, feature) use them.

    A model's profile is the one its config's ``baseline`` names, else ``training``.
    """
    fields = client.query(
        "SELECT DISTINCT model_name, baseline_name, quantity FROM ml_baseline_aggregates "
        "WHERE segment_dim = '__all__' AND startsWith(quantity, 'feature.')"
    ).result_rows
    chosen = {model: profile for model, (profile, _) in model_profiles(plan.config).items()}
    wanted: dict[str, list[tuple[str, str]]] = {}
    for model, profile, quantity in fields:
        if chosen.get(model, DEFAULT_PROFILE) == profile:
            wanted.setdefault(profile, []).append((model, quantity))
    edges: Edges = {}
    for profile, pairs in wanted.items():
        counts = plan.quantile_counts(pairs)
        models = sorted({model for model, _ in counts})
        edges.update(stored_edges(client, profile, models, counts))
    plan.use_quantile_edges(edges)
    return len(edges)
