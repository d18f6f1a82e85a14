"""The detectors' statistics, computed by the real engine, checked against scipy.

Two levels: the SQL functions of ``detectors/statistics.sql`` on random
inputs (chi-square and Kolmogorov survival functions, Jensen-Shannon, the
chi-square test of homogeneity, PSI), and the drift detector end to end: the
statistics it stores with an anomaly equal scipy's on the calls that were sent.
"""

from __future__ import annotations

import datetime as dt
import random
from importlib import resources

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from shop_traffic import END, ingest

from segwatch.clickhouse.detection import load_manifest, run_detector
from segwatch.collector.aggregate.histogram import bucket_value

FRAGMENT = resources.files("segwatch.clickhouse.detectors").joinpath("statistics.sql")


def _evaluate(client, expressions: list[str]) -> list[float]:  # type: ignore[no-untyped-def]
    """The values of SQL expressions that may use the statistics fragment's functions."""
    sql = f"WITH {FRAGMENT.read_text('utf-8')} 1 AS _one SELECT {', '.join(expressions)}"
    return [float(v) for v in client.query(sql).result_rows[0]]


def _psi(b: np.ndarray, c: np.ndarray) -> float:
    pb = (b + 0.5) / (b.sum() + 0.5 * len(b))
    pc = (c + 0.5) / (c.sum() + 0.5 * len(c))
    return float(np.sum((pc - pb) * np.log(pc / pb)))


def test_survival_functions_match_scipy(client) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    # Both regimes of the incomplete gamma (series below a + 1, continued fraction
    # above), tiny and huge statistics, one and many degrees of freedom.
    statistics, dofs = rng.gamma(2.0, 8.0, 40), rng.integers(1, 60, 40)
    cases = [(float(x), int(k)) for x, k in zip(statistics, dofs, strict=True)]
    cases += [(0.001, 1), (7.8147, 3), (18.307, 10), (150.0, 99), (3.0, 20), (400.0, 5)]
    got = _evaluate(client, [f"sw_chi2_sf({x!r}, {k})" for x, k in cases])
    for (x, k), value in zip(cases, got, strict=True):
        assert value == pytest.approx(stats.chi2.sf(x, k), rel=1e-9, abs=1e-300), (x, k)
    # Student's t (the incomplete beta on both sides of its switch point).
    cases = [(float(t), int(k)) for t, k in zip(rng.gamma(2.0, 1.5, 30), rng.integers(1, 80, 30),
                                                strict=True)]  # fmt: skip
    cases += [(0.0, 5), (4.01, 14), (12.0, 3), (40.0, 100), (0.3, 1), (2.0, 1000)]
    got = _evaluate(client, [f"sw_student_t_2sf({t!r}, {k})" for t, k in cases])
    for (t, k), value in zip(cases, got, strict=True):
        assert value == pytest.approx(2 * stats.t.sf(t, k), rel=1e-9, abs=1e-300), (t, k)
    points = [0.2, 0.5, 0.8, 1.0, 1.2224, 1.36, 1.63, 2.0, 3.0]
    got = _evaluate(client, [f"sw_kolmogorov_sf({t})" for t in points])
    assert got == pytest.approx([stats.kstwobign.sf(t) for t in points], rel=1e-9)


def test_divergences_and_homogeneity_match_scipy(client) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(11)
    for _ in range(10):
        bins = int(rng.integers(2, 12))
        b = rng.integers(0, 400, bins).astype(float)
        c = rng.integers(0, 400, bins).astype(float)
        b[0] = c[0] = 0  # a bin empty in both: left out of the chi-square table
        b[1] += 1
        c[1] += 1  # ... and no window entirely empty
        nb, nc = int(b.sum()), int(c.sum())
        bl, cl = b.tolist(), c.tolist()
        js, psi, chi2, dof = _evaluate(client, [
            f"sw_js({bl}, {cl})",
            f"sw_psi({bl}, {cl})",
            f"sw_chi2_of(sw_kept_b({bl}, {cl}, {nb}, {nc}), sw_kept_c({bl}, {cl}, {nb}, {nc}))",
            f"length(sw_kept_b({bl}, {cl}, 1, 1)) - 1",
        ])  # fmt: skip
        assert js == pytest.approx(jensenshannon(b / b.sum(), c / c.sum(), base=2), rel=1e-9)
        assert psi == pytest.approx(_psi(b, c), rel=1e-9)
        table = np.array([b, c])[:, (b + c) > 0]
        expected = stats.chi2_contingency(table, correction=False)
        assert chi2 == pytest.approx(expected.statistic, rel=1e-9)
        assert dof == expected.dof
    # Weighted counts are scaled to the calls received: the evidence is the calls.
    (scaled,) = _evaluate(client, ["sw_chi2_of(sw_kept_b([20., 60.], [60., 20.], 40, 40), "
                                   "sw_kept_c([20., 60.], [60., 20.], 40, 40))"])  # fmt: skip
    assert scaled == pytest.approx(stats.chi2_contingency([[10, 30], [30, 10]], False).statistic)


def _drifting_amounts(seed: int) -> tuple[list[tuple[int, dict]], dict[str, list[float]]]:
    """75 minutes of calls; in the last 15, amounts for country=BR grow tenfold.

    Amounts are values the histogram represents exactly (bucket values), so the
    statistics from the stored histograms must equal scipy's on the raw calls.
    """
    rng = random.Random(seed)
    keys = list(range(16384 + 300, 16384 + 700, 7))
    rows: list[tuple[int, dict]] = []
    sent: dict[str, list[float]] = {"before": [], "now": []}
    for second in range(END - 75 * 60, END):
        current = second >= END - 15 * 60
        country = rng.choice(["BR", "US", "DE", "FR"])
        key = rng.choice(keys[: len(keys) // 2]) if not (current and country == "BR") else (
            rng.choice(keys[len(keys) // 3 :]))  # fmt: skip
        amount = bucket_value(key)
        rows.append((second, {"country": country, "amount": amount}))
        if country == "BR":
            sent["now" if current else "before"].append(amount)
    return rows, sent


def test_drift_statistics_match_scipy_on_the_calls(client, recorder) -> None:  # type: ignore[no-untyped-def]
    rows, sent = _drifting_amounts(seed=5)
    ingest(client, recorder, rows)
    spec = next(s for s in load_manifest() if s.name == "psi_drift")
    at = dt.datetime.fromtimestamp(END, dt.timezone.utc)
    found = run_detector(client, spec, at).new_anomalies
    culprits = [(a["segment_dim"], a["segment_value"], a["quantity"]) for a in found]
    assert culprits[0] == ("feature.country", "BR", "feature.amount"), culprits
    anomaly = found[0]
    numbers = anomaly["statistics"]
    before, now = np.array(sent["before"]), np.array(sent["now"])
    ks = stats.ks_2samp(before, now)
    assert numbers["ks"] == pytest.approx(ks.statistic, rel=1e-9)
    scale = np.sqrt(len(before) * len(now) / (len(before) + len(now)))
    assert numbers["ks_p"] == pytest.approx(stats.kstwobign.sf(ks.statistic * scale), rel=1e-6)
    # Values stand for their bucket within the store's accuracy; these are exact.
    assert numbers["wasserstein"] == pytest.approx(stats.wasserstein_distance(before, now),
                                                   rel=1e-9)  # fmt: skip
    smaller = min(numbers["ks_p"], numbers["chi2_p"])
    assert anomaly["p_value"] == pytest.approx(min(1.0, 2 * smaller))  # Bonferroni over two tests
    assert anomaly["support"] == len(now) and anomaly["baseline_support"] == len(before)
    assert anomaly["baseline_value"] == pytest.approx(before.mean())
    assert anomaly["current_value"] == pytest.approx(now.mean())
    assert numbers["fdr_tests"] >= 2  # every tested segment counts for the FDR
    assert "KS" in anomaly["details"] and "country=BR" in anomaly["details"]
