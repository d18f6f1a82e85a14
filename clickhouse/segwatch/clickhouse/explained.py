"""Is a finding explained by another segment's fault? Its statistic again, without those calls.

A fault in ``country=BR`` (the score rising there) also moves every segment
BR's calls are many of: a decile of an unrelated amount, the whole model. Such
a finding in segment A is a consequence of the incident rooted in segment B
when, recomputed on A's calls that are not B's, its statistic no longer passes
its threshold. The raw calls (``ml_model_calls``) have every field of every
call, so A-without-B can be read from them (:mod:`.segment_calls`); the
aggregates cannot.

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
or expired): A's raw calls in the window must be at least 90 % of the
finding's support. When B holds nearly all of A's calls (fewer than 30 left),
A is B seen from another dimension: explained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from clickhouse_connect.driver.client import Client

from .segment_calls import segment_condition

__all__ = ["EXPLAINABLE", "explained_by"]

EXPLAINABLE = frozenset({
    "metric_shift", "metric_shift_seasonal", "psi_drift", "volume",
    "data_missing", "data_range", "data_categories",
})  # fmt: skip
"""The detectors whose findings are recomputed without a cause's calls."""
_MIN_LEFT = 30
_RAW_COVERAGE = 0.9


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
    if finding["detector"] not in EXPLAINABLE or cause_segment[0] == finding["segment_dim"]:
        return None
    parameters_of_detector = parameters
    a = segment_condition(finding["segment_dim"], finding["segment_value"], "a")
    b = segment_condition(*cause_segment, "b")
    if a is None or b is None or cause_segment[0] == "__all__":
        return None
    parameters = {
        **a[1], **b[1],
        "model": finding["model_name"], "version": finding["model_version"],
        "stage": finding["model_stage"], "q": finding["quantity"],
        "start": _text(finding["window_start"]), "end": _text(finding["window_end"]),
    }  # fmt: skip
    model_calls = """
        FROM ml_model_calls
        WHERE model_name = {model:String} AND model_version = {version:String}
          AND model_stage = {stage:String}"""
    if finding["detector"] == "volume":
        return _without_volume(client, finding, model_calls, a[0], b[0], parameters)
    if finding["detector"] in ("data_range", "data_categories"):
        tolerance = float((parameters_of_detector or {}).get("range_tolerance", 0.05))
        return _without_bad_values(
            client, finding, model_calls, a[0], b[0], {**parameters, "tolerance": tolerance}
        )
    calls = f"{model_calls} AND ({a[0]})"
    if finding["detector"] == "psi_drift":
        return _without_psi(client, finding, calls, b[0], parameters)
    return _without_mean_or_missing(client, finding, calls, b[0], parameters)


def _without_volume(
    client: Client,
    finding: Mapping[str, Any],
    model_calls: str,
    segment: str,
    cause: str,
    parameters: dict[str, Any],
) -> str | None:
    """volume's drop for A's calls not in B: observed against their baseline share."""
    parameters = {**parameters, "baseline_start": _text(finding["baseline_start"])}
    current = "timestamp >= {start:DateTime('UTC')}"
    row = client.query(
        f"""SELECT countIf({current} AND ({segment})),
                   countIf({current} AND ({segment}) AND NOT ({cause})),
                   countIf(NOT {current} AND ({segment}) AND NOT ({cause})),
                   countIf({current}), countIf(NOT {current})
            {model_calls} AND timestamp >= {{baseline_start:DateTime('UTC')}}
              AND timestamp < {{end:DateTime('UTC')}}""",
        parameters=parameters,
    ).result_rows[0]
    n, left, left_before, model_now, model_before = (int(x) for x in row)
    if model_before == 0 or left_before == 0:
        return None
    expected = left_before / model_before * model_now
    settled, answer = _settled(finding, n, max(left, int(expected)))
    if settled:
        return answer
    drop = max(0.0, 1 - left / expected)
    threshold = float(finding["threshold"])
    if drop > threshold:
        return None
    return (f"without its calls there, {left} calls came of the {expected:.0f} their "
            f"baseline share expects (drop {drop:.2f}, under {threshold:g})")  # fmt: skip


def _without_mean_or_missing(
    client: Client, finding: Mapping[str, Any], calls: str, cause: str, parameters: dict[str, Any]
) -> str | None:
    """metric_shift's robust z, or data_missing's share, of A's calls not in B."""
    in_window = "timestamp >= {start:DateTime('UTC')} AND timestamp < {end:DateTime('UTC')}"
    row = client.query(
        f"""SELECT count() AS n, countIf(NOT ({cause})) AS left,
                   avgIf(numbers[{{q:String}}], NOT ({cause}) AND mapContains(numbers, {{q:String}})
                         AND isFinite(numbers[{{q:String}}])) AS mean_left,
                   countIf(NOT ({cause}) AND NOT mapContains(numbers, {{q:String}})
                           AND NOT mapContains(strings, {{q:String}})) AS missing_left
            {calls} AND {in_window}""",
        parameters=parameters,
    ).result_rows[0]
    n, left, mean_left, missing_left = int(row[0]), int(row[1]), float(row[2]), int(row[3])
    settled, answer = _settled(finding, n, left)
    if settled:
        return answer
    statistics = finding.get("statistics") or {}
    threshold = float(finding["threshold"])
    if finding["detector"] == "data_missing":
        baseline = float(statistics.get("baseline_share", math.nan))
        score = missing_left / left - baseline
        what = f"{100 * missing_left / left:.1f} % missing (baseline {100 * baseline:.1f} %)"
    else:
        median = float(statistics.get("median", math.nan))
        scale = float(statistics.get("scale", math.nan))
        score = abs(mean_left - median) / scale if scale > 0 else math.nan
        what = f"mean {mean_left:.4g} against the usual {median:.4g}: robust z {score:.2f}"
    if not math.isfinite(score) or score > threshold:
        return None
    return f"without its {n - left} calls there, its {left} calls give {what}, under {threshold:g}"


def _without_bad_values(
    client: Client,
    finding: Mapping[str, Any],
    model_calls: str,
    segment: str,
    cause: str,
    parameters: dict[str, Any],
) -> str | None:
    """data_range's or data_categories' share of bad values among A's calls not in B:
    outside the whole model's baseline range, or never seen in its baseline."""
    parameters = {**parameters, "baseline_start": _text(finding["baseline_start"])}
    q = "{q:String}"
    before = (f"{model_calls} AND timestamp >= {{baseline_start:DateTime('UTC')}} "
              "AND timestamp < {start:DateTime('UTC')}")  # fmt: skip
    if finding["detector"] == "data_range":
        present = f"mapContains(numbers, {q}) AND isFinite(numbers[{q}])"
        bad = (f"numbers[{q}] < low - abs(low) * {{tolerance:Float64}} "
               f"OR numbers[{q}] > high + abs(high) * {{tolerance:Float64}}")  # fmt: skip
        known = (f"(SELECT minIf(numbers[{q}], {present}) {before}) AS low, "
                 f"(SELECT maxIf(numbers[{q}], {present}) {before}) AS high")  # fmt: skip
    else:
        present = f"mapContains(strings, {q})"
        bad = f"NOT has(seen, strings[{q}])"
        known = f"(SELECT groupUniqArrayIf(strings[{q}], {present}) {before}) AS seen"
    row = client.query(
        f"""WITH {known}
            SELECT countIf({segment}), countIf(({segment}) AND NOT ({cause}) AND {present}),
                   countIf(({segment}) AND NOT ({cause}) AND {present} AND ({bad}))
            {model_calls} AND timestamp >= {{start:DateTime('UTC')}}
              AND timestamp < {{end:DateTime('UTC')}}""",
        parameters=parameters,
    ).result_rows[0]
    n, left, bad_left = (int(x) for x in row)
    settled, answer = _settled(finding, n, left)
    if settled:
        return answer
    share = bad_left / left
    threshold = float(finding["threshold"])
    if share > threshold:
        return None
    what = "out of range" if finding["detector"] == "data_range" else "never seen"
    return (f"without its {n - left} calls there, {100 * share:.2f} % of its {left} calls' "
            f"values are {what}, under {100 * threshold:g} %")  # fmt: skip


def _without_psi(
    client: Client, finding: Mapping[str, Any], calls: str, cause: str, parameters: dict[str, Any]
) -> str | None:
    """psi_drift's PSI of A's calls not in B in the window, against A in the baseline."""
    parameters = {**parameters, "baseline_start": _text(finding["baseline_start"])}
    q = "{q:String}"
    rows = client.query(
        f"""WITH (SELECT arrayDistinct(quantiles(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)(
                          numbers[{q}]))
                  {calls} AND timestamp >= {{baseline_start:DateTime('UTC')}}
                  AND timestamp < {{start:DateTime('UTC')}} AND mapContains(numbers, {q})
                  AND isFinite(numbers[{q}])) AS edges
            SELECT timestamp >= {{start:DateTime('UTC')}} AS current,
                   multiIf(mapContains(numbers, {q}),
                           concat('#', toString(arrayCount(e -> e < numbers[{q}], edges))),
                           mapContains(strings, {q}), concat('=', strings[{q}]), 'MISSING') AS bin,
                   count() AS calls, countIf(NOT ({cause})) AS left
            {calls} AND timestamp >= {{baseline_start:DateTime('UTC')}}
              AND timestamp < {{end:DateTime('UTC')}}
            GROUP BY current, bin""",
        parameters=parameters,
    ).result_rows
    baseline = {bin_: int(calls) for current, bin_, calls, _ in rows if not current}
    window = {bin_: int(left) for current, bin_, _, left in rows if current}
    n = sum(int(calls) for current, _, calls, _ in rows if current)
    settled, answer = _settled(finding, n, sum(window.values()))
    if settled:
        return answer
    if not baseline:
        return None
    psi = _psi(baseline, window)
    threshold = float(finding["threshold"])
    if psi > threshold:
        return None
    left = sum(window.values())
    return (f"without its {n - left} calls there, its {left} calls give PSI {psi:.3f}, "
            f"under {threshold:g}")  # fmt: skip


def _settled(finding: Mapping[str, Any], n: int, left: int) -> tuple[bool, str | None]:
    """Whether the counts alone answer, and the answer: None when the raw calls do not hold
    the finding's ``n`` calls (cannot be told), a sentence when the cause holds nearly all
    of them (explained); (False, None) when the statistic must be recomputed."""
    if n == 0 or n < _RAW_COVERAGE * int(finding["support"]):
        return True, None
    if left < _MIN_LEFT:
        return True, f"all but {left} of its {n} calls are the cause's"
    return False, None


def _psi(baseline: Mapping[str, int], current: Mapping[str, int]) -> float:
    """PSI on proportions smoothed by half a call per bin (as psi_drift's ``sw_psi``)."""
    bins = sorted(set(baseline) | set(current))
    b_total = sum(baseline.values()) + 0.5 * len(bins)
    c_total = sum(current.values()) + 0.5 * len(bins)
    total = 0.0
    for key in bins:
        p = (baseline.get(key, 0) + 0.5) / b_total
        q = (current.get(key, 0) + 0.5) / c_total
        total += (q - p) * math.log(q / p)
    return total


def _text(moment: Any) -> str:
    return str(moment.strftime("%Y-%m-%d %H:%M:%S"))
