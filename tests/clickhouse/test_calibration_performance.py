"""performance on hundreds of clean runs: calibrated p-values once labels arrive.

250 seeds, each a version of two models (the performance query reads the
labelled raw calls of every model a label line names, so versions are the
cheap way to many seeds): ``perf``, a classifier whose score's log-odds are
N(-1, 1.5) and whose truth is drawn from that score (a calibrated model), and
``eta``, a regressor whose errors are N(0, 3). 500 calls of each in the 7-day
baseline and 500 in the 6-hour window, each with a category feature.g (s0 or
s1), the same throughout. Generated in SQL (a hash of the row number stands
for a random draw: the same every run), inserted straight into ml_model_calls
and ml_labels.

The p-values (one-sided z tests of the loss, on binomial, Hanley-McNeil or
delta-method standard errors) are read where computed, every test, per metric,
of both segments of each seed (each against its own baseline: independent;
not the whole model, which holds them both); BH runs per seed (a version:
both models' tests).
"""

from __future__ import annotations

from test_calibration import (
    AT,
    assert_false_finding_share,
    assert_uniform,
    per_seed,
    rows_tested,
    seeds_with_findings,
    spec_named,
)

from segwatch.clickhouse.detection import DetectorSpec

SEEDS = 250
CALLS = 500  # per seed and period
LABELS = (
    "perf\tlabel.is_fraud\tclassification\toutput.is_fraud\toutput.score\ttrue\t0.5\n"
    "eta\tlabel.minutes\tregression\toutput.minutes\t\ttrue\t0.5"
)

# A uniform draw in (0, 1) from the row number and a salt, and a normal one (Box-Muller).
_UNIFORM = "((cityHash64(number, {salt}) % 4294967296) + 0.5) / 4294967296"
_NORMAL = f"sqrt(-2 * log({_UNIFORM.format(salt=1)})) * cos(2 * pi() * {_UNIFORM.format(salt=2)})"
CALLS_SQL = f"""
INSERT INTO ml_model_calls (timestamp, trace_id, span_id, duration_ns, model_name, model_version,
                            model_stage, operation, prediction_id, service_name, numbers, strings)
SELECT timestamp, hex(number), '', 1, 'perf', toString(intDiv(number, 2 * {CALLS})), 'serving',
       'predict', toString(number), 'calibration',
       map('output.score', score), map('feature.g', if({_UNIFORM.format(salt=3)} < 0.5, 's0', 's1'),
                                       'output.is_fraud', if(score >= 0.5, 'true', 'false'))
FROM (
    SELECT number, 1 / (1 + exp(-(-1 + 1.5 * {_NORMAL}))) AS score,
           -- even rows in the baseline, odd rows in the window, spread over each
           if(number % 2 = 0,
              {{baseline_start:DateTime64(9, 'UTC')}} + toIntervalNanosecond(
                  toUInt64({_UNIFORM.format(salt=4)} * {{baseline_ns:UInt64}})),
              {{window_start:DateTime64(9, 'UTC')}} + toIntervalNanosecond(
                  toUInt64({_UNIFORM.format(salt=4)} * {{window_ns:UInt64}}))) AS timestamp
    FROM numbers({SEEDS * 2 * CALLS})
)
"""
LABELS_SQL = f"""
INSERT INTO ml_labels (timestamp, model_name, prediction_id, numbers, strings, trace_id,
                       service_name)
SELECT timestamp, 'perf', prediction_id, map(),
       map('label.is_fraud',
           if({_UNIFORM.format(salt=5)} < numbers['output.score'], 'true', 'false')),
       '', 'calibration'
FROM (SELECT toUInt64(prediction_id) AS number, * FROM ml_model_calls WHERE model_name = 'perf')
"""

# The truth of eta's calls: the prediction plus N(0, 3) (other salts than the prediction's).
_ERROR = _NORMAL.replace("number, 1)", "number, 6)").replace("number, 2)", "number, 7)")
REGRESSION_LABELS_SQL = f"""
INSERT INTO ml_labels (timestamp, model_name, prediction_id, numbers, strings, trace_id,
                       service_name)
SELECT timestamp, 'eta', prediction_id,
       map('label.minutes', numbers['output.minutes'] + 3 * {_ERROR}), map(), '', 'calibration'
FROM (SELECT toUInt64(prediction_id) AS number, * FROM ml_model_calls WHERE model_name = 'eta')
"""


def _labelled_calls(client, spec: DetectorSpec) -> None:  # type: ignore[no-untyped-def]
    windows = spec.windows(AT)
    nanoseconds = {
        "baseline_ns": int(
            (windows["baseline_end"] - windows["baseline_start"]).total_seconds() * 1e9
        ),
        "window_ns": int((windows["window_end"] - windows["window_start"]).total_seconds() * 1e9),
    }
    stamps = {
        k: windows[k].strftime("%Y-%m-%d %H:%M:%S") for k in ("baseline_start", "window_start")
    }
    client.command(CALLS_SQL, parameters={**stamps, **nanoseconds})
    client.command(LABELS_SQL)
    # eta: a regressor whose errors are N(0, 3) minutes throughout
    client.command(
        CALLS_SQL.replace("'perf'", "'eta'").replace(
            "map('output.score', score)", f"map('output.minutes', 20 + 5 * {_NORMAL})"
        ),
        parameters={**stamps, **nanoseconds},
    )
    client.command(REGRESSION_LABELS_SQL)


def test_performance_p_values_are_uniform_and_bh_holds_its_rate(client) -> None:  # type: ignore[no-untyped-def]
    spec = spec_named("performance", labels=LABELS, threshold=0.0, error_threshold=0.0)
    _labelled_calls(client, spec)
    rows = rows_tested(client, spec, "metric_name, p_value, model_version, segment_value")
    metrics: dict[str, list[float]] = {}
    for metric, p_value, _, segment in rows:
        if segment != "__all__":
            metrics.setdefault(metric, []).append(p_value)
    assert {m: len(v) for m, v in metrics.items()} == dict.fromkeys(
        ("accuracy", "precision", "recall", "auc", "mae", "rmse"), 2 * SEEDS
    )
    for metric, values in metrics.items():
        assert_uniform(values, f"performance {metric}")
    found = seeds_with_findings(client, per_seed(spec, "model_version"), seed_column=2)
    assert_false_finding_share(len(found), SEEDS, spec.parameters["fdr"], "performance")
