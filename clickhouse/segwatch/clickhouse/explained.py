"""Is a finding explained by another segment's fault? Its statistic again, without those calls.

A fault in ``country=BR`` (the score rising there) also moves every segment
BR's calls are many of: a decile of an unrelated amount, the whole model. Such
a finding in segment A is a consequence of the incident rooted in segment B
when its statistic, recomputed from the raw calls, passes its threshold on all
of A's calls and no longer does on A's calls that are not B's. The raw calls
(``ml_model_calls``) have every field of every call, so A-without-B can be read
from them (:mod:`.segment_calls`); the aggregates cannot. The recomputation is
not the detector's own statistic (unweighted raw calls, not the weighted
histograms), so the finding must be reproduced on all of A's calls first: a
finding the raw calls do not reproduce is not explained away by them.

Recomputed, per detector:

* ``metric_shift``, ``metric_shift_seasonal`` — the window's mean of A-without-B
  against the finding's own baseline (its ``median`` and ``scale``): the robust z;
* ``psi_drift`` — the PSI of A-without-B in the window against A in the
  baseline window, over A's baseline deciles (numbers) or values (categories)
  and MISSING, smoothed as psi_drift smooths;
* ``data_missing`` — the share of A-without-B's calls missing the quantity,
  less the finding's baseline share;
* ``data_range``, ``data_categories`` — the share of A-without-B's values in the
  window outside the whole model's baseline range (with the detector's
  ``range_tolerance``), or never seen in its baseline;
* ``volume`` — the calls of A-without-B in the window against what their share
  of the model's calls in the baseline expects (B's calls leaving A, e.g. to
  ``MISSING`` once B's value goes missing, do not count as A's traffic dropping).

Other detectors are not recomputed (a profile or another version is their
baseline, not raw calls of the window): their findings stay incidents of their
own. Nor is a finding whose calls the raw table does not hold (raw calls off,
or expired): A's raw calls in the finding's window must be at least 90 % of
its support. When B holds nearly all of A's calls (fewer than 30 left), A is B
seen from another dimension: explained. The window is the one the finding was
found in (``found_window_start``/``found_window_end``, which may be before the
window whose run opened it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from .lifecycle import sql_time
from .segment_calls import segment_condition
from .store import DETECTOR_SETTINGS

__all__ = ["EXPLAINABLE", "explained_by"]

EXPLAINABLE = frozenset({
    "metric_shift", "metric_shift_seasonal", "psi_drift", "volume",
    "data_missing", "data_range", "data_categories",
})  # fmt: skip
"""The detectors whose findings are recomputed without a cause's calls."""
_MIN_LEFT = 30
_RAW_COVERAGE = 0.9


@dataclass(frozen=True)
class _Recomputed:
    """A's raw calls in the window (``n``), those not the cause's (``left``), and the
    statistic on each (``with_cause``, ``without_cause``, the latter said in ``said``)."""

    n: int
    left: int
    with_cause: float
    without_cause: float
    said: str


def explained_by(
    client: Client,
    finding: Mapping[str, Any],
    cause_segment: tuple[str, str],
    parameters: Mapping[str, Any] | None = None,
) -> str | None:
    """A sentence saying how ``finding`` (an ``open`` transition: key, window, baseline,
    score, threshold, support, statistics) falls under its threshold without the calls of
    ``cause_segment`` (a (dimension, value) of another dimension), or None if it does not
    (or cannot be told). ``parameters``: its detector's (e.g. ``range_tolerance``)."""
    if finding["detector"] not in EXPLAINABLE or cause_segment[0] in (
        finding["segment_dim"],
        "__all__",
    ):
        return None
    a = segment_condition(finding["segment_dim"], finding["segment_value"], "a")
    b = segment_condition(*cause_segment, "b")
    if a is None or b is None:
        return None
    start = finding.get("found_window_start", finding["window_start"])
    end = finding.get("found_window_end", finding["window_end"])
    bound = {
        **a[1], **b[1],
        "model": finding["model_name"], "version": finding["model_version"],
        "stage": finding["model_stage"], "q": finding["quantity"],
        "start": sql_time(start), "end": sql_time(end),
        "baseline_start": sql_time(finding.get("baseline_start", start)),
        "tolerance": float((parameters or {}).get("range_tolerance", 0.05)),
    }  # fmt: skip
    recompute = _RECOMPUTE[finding["detector"]]
    found = recompute(client, finding, _Query(a[0], b[0], bound))
    return None if found is None else _verdict(finding, found)


def _verdict(finding: Mapping[str, Any], found: _Recomputed) -> str | None:
    threshold = float(finding["threshold"])
    if found.n == 0 or found.n < _RAW_COVERAGE * int(finding["support"]):
        return None  # the raw calls do not hold the finding's calls
    if not found.with_cause > threshold:
        return None  # the raw calls do not reproduce the finding: they cannot explain it
    if found.left < _MIN_LEFT:
        return f"all but {found.left} of its {found.n} calls are the cause's"
    if not found.without_cause <= threshold:
        return None  # still found without the cause's calls (or NaN: cannot tell)
    return (f"without its {found.n - found.left} calls there, its {found.left} calls give "
            f"{found.said}, under {threshold:g} (with them {found.with_cause:.3g})")  # fmt: skip


@dataclass(frozen=True)
class _Query:
    """The parts of a recomputation's SQL: the segment's and the cause's conditions on
    ``ml_model_calls`` (code-made; every value is in ``parameters``)."""

    segment: str
    cause: str
    parameters: dict[str, Any]

    model_calls = """
        FROM ml_model_calls
        WHERE model_name = {model:String} AND model_version = {version:String}
          AND model_stage = {stage:String}"""
    in_window = "timestamp >= {start:DateTime('UTC')} AND timestamp < {end:DateTime('UTC')}"
    in_baseline = (
        "timestamp >= {baseline_start:DateTime('UTC')} AND timestamp < {start:DateTime('UTC')}"
    )

    def row(self, client: Client, sql: str) -> tuple[Any, ...]:
        return tuple(
            client.query(sql, parameters=self.parameters, settings=DETECTOR_SETTINGS).result_rows[0]
        )


def _volume(client: Client, finding: Mapping[str, Any], q: _Query) -> _Recomputed | None:
    """volume's drop: A's calls in the window against what A's baseline share expects."""
    n, left, before, left_before, model_now, model_before = q.row(
        client,
        f"""
        SELECT countIf({q.in_window} AND ({q.segment})),
               countIf({q.in_window} AND ({q.segment}) AND NOT ({q.cause})),
               countIf({q.in_baseline} AND ({q.segment})),
               countIf({q.in_baseline} AND ({q.segment}) AND NOT ({q.cause})),
               countIf({q.in_window}), countIf({q.in_baseline})
        {q.model_calls} AND timestamp >= {{baseline_start:DateTime('UTC')}}
          AND timestamp < {{end:DateTime('UTC')}}""",
    )
    if not (model_before and left_before):
        return None
    expected, expected_left = (x / model_before * model_now for x in (before, left_before))
    without = max(0.0, 1 - left / expected_left)
    said = (
        f"{left} calls of the {expected_left:.0f} their baseline share expects: drop {without:.2f}"
    )
    # B's calls leaving A (to MISSING, say) are not A's traffic dropping
    return _Recomputed(n, max(left, int(expected_left)), max(0.0, 1 - n / expected), without, said)


def _mean_or_missing(client: Client, finding: Mapping[str, Any], q: _Query) -> _Recomputed:
    """metric_shift's robust z of the window's mean, or data_missing's share."""
    number = "mapContains(numbers, {q:String}) AND isFinite(numbers[{q:String}])"
    missing = "NOT mapContains(numbers, {q:String}) AND NOT mapContains(strings, {q:String})"
    n, left, mean, mean_left, missed, missed_left = q.row(
        client,
        f"""
        SELECT count(), countIf(NOT ({q.cause})),
               avgIf(numbers[{{q:String}}], {number}),
               avgIf(numbers[{{q:String}}], NOT ({q.cause}) AND {number}),
               countIf({missing}), countIf(NOT ({q.cause}) AND {missing})
        {q.model_calls} AND ({q.segment}) AND {q.in_window}""",
    )
    statistics = finding.get("statistics") or {}
    if finding["detector"] == "data_missing":
        baseline = float(statistics.get("baseline_share", math.nan))
        share, share_left = missed / max(n, 1), missed_left / max(left, 1)
        said = f"{100 * share_left:.1f} % missing (baseline {100 * baseline:.1f} %)"
        return _Recomputed(n, left, share - baseline, share_left - baseline, said)
    median = float(statistics.get("median", math.nan))
    scale = float(statistics.get("scale", math.nan))
    z, z_left = (abs(float(m) - median) / scale if scale > 0 else math.nan
                 for m in (mean, mean_left))  # fmt: skip
    said = f"mean {float(mean_left):.4g} against the usual {median:.4g}: robust z {z_left:.2f}"
    return _Recomputed(n, left, z, z_left, said)


def _bad_values(client: Client, finding: Mapping[str, Any], q: _Query) -> _Recomputed:
    """data_range's or data_categories' share of bad values: outside the whole model's
    baseline range (with range_tolerance), or never seen in its baseline."""
    key, before = "{q:String}", f"{q.model_calls} AND {q.in_baseline}"
    if finding["detector"] == "data_range":
        present = f"mapContains(numbers, {key}) AND isFinite(numbers[{key}])"
        bad = (f"numbers[{key}] < low - abs(low) * {{tolerance:Float64}} "
               f"OR numbers[{key}] > high + abs(high) * {{tolerance:Float64}}")  # fmt: skip
        known = (f"(SELECT minIf(numbers[{key}], {present}) {before}) AS low, "
                 f"(SELECT maxIf(numbers[{key}], {present}) {before}) AS high")  # fmt: skip
        what = "out of range"
    else:
        present = f"mapContains(strings, {key})"
        bad = f"NOT has(seen, strings[{key}])"
        known = f"(SELECT groupUniqArrayIf(strings[{key}], {present}) {before}) AS seen"
        what = "never seen"
    n, valued, valued_left, wrong, wrong_left = q.row(
        client,
        f"""
        WITH {known}
        SELECT count(), countIf({present}), countIf(NOT ({q.cause}) AND {present}),
               countIf({present} AND ({bad})), countIf(NOT ({q.cause}) AND {present} AND ({bad}))
        {q.model_calls} AND ({q.segment}) AND {q.in_window}""",
    )
    share, share_left = wrong / max(valued, 1), wrong_left / max(valued_left, 1)
    said = f"{100 * share_left:.2f} % of values {what}"
    return _Recomputed(n, valued_left, share, share_left, said)


def _psi_drift(client: Client, finding: Mapping[str, Any], q: _Query) -> _Recomputed | None:
    """psi_drift's PSI of the window against A in the baseline window, over A's baseline
    deciles (numbers) or values (categories) and MISSING."""
    key = "{q:String}"
    calls = f"{q.model_calls} AND ({q.segment})"
    rows = client.query(
        f"""WITH (SELECT arrayDistinct(quantiles(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)(
                          numbers[{key}]))
                  {calls} AND {q.in_baseline} AND mapContains(numbers, {key})
                  AND isFinite(numbers[{key}])) AS edges
            SELECT timestamp >= {{start:DateTime('UTC')}} AS current,
                   multiIf(mapContains(numbers, {key}),
                           concat('#', toString(arrayCount(e -> e < numbers[{key}], edges))),
                           mapContains(strings, {key}), concat('=', strings[{key}]), 'MISSING')
                       AS bin,
                   count() AS calls, countIf(NOT ({q.cause})) AS left
            {calls} AND timestamp >= {{baseline_start:DateTime('UTC')}}
              AND timestamp < {{end:DateTime('UTC')}}
            GROUP BY current, bin""",
        parameters=q.parameters,
        settings=DETECTOR_SETTINGS,
    ).result_rows
    baseline = {bin_: int(calls) for current, bin_, calls, _ in rows if not current}
    window = {bin_: int(calls) for current, bin_, calls, _ in rows if current}
    window_left = {bin_: int(left) for current, bin_, _, left in rows if current}
    if not baseline:
        return None
    without = _psi(baseline, window_left)
    n, left = sum(window.values()), sum(window_left.values())
    return _Recomputed(n, left, _psi(baseline, window), without, f"PSI {without:.3f}")


_RECOMPUTE = {
    "metric_shift": _mean_or_missing,
    "metric_shift_seasonal": _mean_or_missing,
    "data_missing": _mean_or_missing,
    "data_range": _bad_values,
    "data_categories": _bad_values,
    "psi_drift": _psi_drift,
    "volume": _volume,
}


def _psi(baseline: Mapping[str, int], current: Mapping[str, int]) -> float:
    """PSI on proportions smoothed by half a call per bin (as psi_drift's ``sw_psi``)."""
    bins = sorted(set(baseline) | set(current))
    b_total = sum(baseline.values()) + 0.5 * len(bins)
    c_total = sum(current.values()) + 0.5 * len(bins)
    total = 0.0
    for key in bins:
        p = (baseline.get(key, 0) + 0.5) / b_total
        r = (current.get(key, 0) + 0.5) / c_total
        total += (r - p) * math.log(r / p)
    return total
