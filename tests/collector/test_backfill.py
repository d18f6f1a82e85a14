"""segwatch backfill: logged predictions stored as the spans of the same calls would be, once."""

from __future__ import annotations

import csv
import datetime as dt
import random
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segwatch.collector import cli as cli_package
from segwatch.collector.aggregate.aggregator import SegmentAggregator
from segwatch.collector.cli import backfill as cli_backfill
from segwatch.collector.cli.main import main
from segwatch.collector.config import parse_config
from segwatch.collector.decode.reference_reader import decode_request
from segwatch.collector.profile.backfill import backfill_file
from segwatch.collector.profile.columns import column_quantities
from segwatch.collector.segment.plan import SegmentationPlan
from segwatch.instrumentation import monitor

START = int(dt.datetime.now(dt.timezone.utc).timestamp()) // 3600 * 3600 - 2 * 3600
"""Two hours ago, on the hour: inside the raw calls' 30-day retention."""
DECLARED = "models:\n  fraud:\n    outputs: {score: {}}\n"
"""A config that declares the output ``score``: the file's column ``score`` is that output."""
STATE = ("count", "missing", "numeric_count", "sum", "min", "max", "histogram", "categories")
KEY = ("model_name", "model_version", "model_stage", "bucket_start", "segment_dim",
       "segment_value", "quantity")  # fmt: skip


def _calls(n: int, seed: int = 3) -> list[dict]:
    """Calls over a few minutes, with MISSING values in every field."""
    rng = random.Random(seed)
    return [
        {
            "time": START + i * 240 // n,
            "amount": None if rng.random() < 0.1 else round(rng.lognormvariate(3, 1), 2),
            "country": rng.choice(["BR", "US", "DE", None]),
            "score": None if rng.random() < 0.05 else round(rng.random(), 4),
        }
        for i in range(n)
    ]


def _write_csv(path: Path, calls: list[dict], times: list[str] | None = None) -> Path:
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["ts", "amount", "country", "score"])
        for i, call in enumerate(calls):
            when = times[i] if times else dt.datetime.fromtimestamp(call["time"], dt.timezone.utc)
            out.writerow([when if times else when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                          *("" if call[k] is None else call[k]
                            for k in ("amount", "country", "score"))])  # fmt: skip
    return path


def _as_spans(recorder, calls: list[dict], config) -> dict[tuple, dict]:  # type: ignore[no-untyped-def]
    """The aggregate rows the collector makes of the same calls sent as spans, merged by key."""
    model = monitor(model="fraud", version="1", tracer_provider=recorder.provider)
    for call in calls:
        at = call["time"] * 1_000_000_000
        with model.call(start_time=at, end_time=at + 1) as span:
            span.features(amount=call["amount"], country=call["country"])
            span.outputs(score=call["score"])
    aggregator = SegmentAggregator(SegmentationPlan(config))
    rows = aggregator.aggregate(decode_request(recorder.request()))
    merged: dict[tuple, dict] = {}
    for i in range(len(rows)):
        key = tuple(rows.columns[k][i] for k in KEY)
        state = {n: rows.columns[n][i] for n in STATE}
        merged[key] = _merge(merged[key], state) if key in merged else state
    return merged


def _merge(a: dict, b: dict) -> dict:
    out = {n: a[n] + b[n] for n in ("count", "missing", "numeric_count", "sum")}
    out["min"], out["max"] = min(a["min"], b["min"]), max(a["max"], b["max"])
    for name in ("histogram", "categories"):
        out[name] = dict(Counter(a[name]) + Counter(b[name]))
    return out


def _stored(client) -> dict[tuple, dict]:  # type: ignore[no-untyped-def]
    result = client.query(
        f"SELECT {', '.join(KEY)}, sum(count), sum(missing), sum(numeric_count), sum(sum), "
        "min(min), max(max), sumMap(histogram), sumMap(categories) FROM ml_segment_aggregates "
        f"GROUP BY {', '.join(KEY)}"
    ).result_rows
    out = {}
    for row in result:
        key = (*row[:3], int(row[3].replace(tzinfo=dt.timezone.utc).timestamp()), *row[4:7])
        out[key] = dict(zip(STATE, row[7:], strict=True))
    return out


def _totals(client) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """(raw calls stored, calls counted by the whole-model aggregate of feature.amount)."""
    calls = client.query("SELECT count() FROM ml_model_calls").result_rows[0][0]
    counted = client.query(
        "SELECT sum(count) FROM ml_segment_aggregates WHERE segment_dim = '__all__' "
        "AND quantity = 'feature.amount'"
    ).result_rows[0][0]
    return int(calls), float(counted or 0)


def test_backfill_stores_what_the_same_calls_sent_as_spans_make(
    client, recorder, tmp_path: Path
) -> None:
    calls = _calls(1500)
    config = parse_config(f"{DECLARED}    features: {{amount: {{}}, country: {{}}}}\n"
                          "    crosses: [[amount, country]]\n")  # fmt: skip
    path = _write_csv(tmp_path / "calls.csv", calls)
    result = backfill_file(client, str(path), model="fraud", version="1", timestamp="ts",
                           chunk_rows=400, config=config)  # fmt: skip
    assert (result.rows, result.chunks) == (1500, 4)
    assert result.quantities == {"amount": "feature.amount", "country": "feature.country",
                                 "score": "output.score"}  # fmt: skip
    expected, stored = _as_spans(recorder, calls, config), _stored(client)
    assert {k[4] for k in stored} == {"__all__", "feature.amount", "feature.country",
                                      "feature.amount×feature.country"}  # fmt: skip
    assert stored.keys() == expected.keys()
    for key, state in expected.items():
        got = stored[key]
        assert got["sum"] == pytest.approx(state["sum"]), key
        assert {n: got[n] for n in state if n != "sum"} == {n: state[n] for n in state
                                                             if n != "sum"}, key  # fmt: skip
    assert _totals(client) == (1500, 1500.0)
    services = client.query("SELECT DISTINCT service_name FROM ml_model_calls").result_rows
    assert services == [("segwatch backfill",)]


def test_a_rerun_after_a_refused_row_a_crash_or_a_success_stores_each_call_once(
    client, tmp_path: Path
) -> None:
    calls = _calls(1000, seed=5)
    times = [dt.datetime.fromtimestamp(c["time"], dt.timezone.utc).isoformat() for c in calls]
    times[700] = "soon"
    path = _write_csv(tmp_path / "calls.csv", calls, times)
    with pytest.raises(ValueError, match=r"calls\.csv:702: column 'ts': 'soon' is not a time"):
        backfill_file(client, str(path), model="fraud", timestamp="ts", chunk_rows=200)
    assert _totals(client) == (600, 600.0)  # the three chunks before the refused row's

    def crash(done: int, total: int) -> None:
        if done >= 800:
            raise KeyboardInterrupt  # killed mid-file, after the fourth chunk was stored

    times[700] = times[699]
    _write_csv(path, calls, times)  # the row fixed: the chunks before it are the same
    with pytest.raises(KeyboardInterrupt):
        backfill_file(client, str(path), model="fraud", timestamp="ts", chunk_rows=200,
                      progress=crash)  # fmt: skip
    assert _totals(client) == (800, 800.0)
    already = []
    for _ in range(2):  # the rerun stores the rest; a third run stores nothing
        result = backfill_file(client, str(path), model="fraud", timestamp="ts", chunk_rows=200)
        assert _totals(client) == (1000, 1000.0)
        already.append((result.rows, result.already_stored))
    assert already == [(1000, 800), (1000, 1000)]  # each run says what the store already had
    other = _write_csv(tmp_path / "more.csv", _calls(1000, seed=6))
    backfill_file(client, str(other), model="fraud", timestamp="ts", chunk_rows=200)
    assert _totals(client) == (2000, 2000.0)  # other rows are other calls


def test_the_config_says_which_field_each_column_is() -> None:
    config = parse_config(
        "models:\n  fraud:\n    outputs: {score: {}}\n    metrics: {latency: {}}\n"
        "contexts: {language: {}}\n"
    )
    mapped = column_quantities(["amount", "score", "latency", "language", "metric.x",
                                "ml.output.label"], "fraud", config)  # fmt: skip
    assert mapped == {"amount": "feature.amount", "score": "output.score",
                      "latency": "metric.latency", "language": "context.language",
                      "metric.x": "metric.x", "ml.output.label": "output.label"}  # fmt: skip
    assert column_quantities(["score"], "other", config) == {"score": "feature.score"}
    with pytest.raises(ValueError, match=r"'score' and 'output\.score' are both output\.score"):
        column_quantities(["score", "output.score"], "fraud", config)
    both = parse_config("models:\n  fraud:\n    features: {p: {}}\n    outputs: {p: {}}\n")
    with pytest.raises(ValueError, match="declares 'p' as feature and output"):
        column_quantities(["p"], "fraud", both)


def _config_file(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "segwatch.yaml"
    config.write_text(f"storage:\n  dsn: chdb://{tmp_path / 'store'}\n{extra}")
    return config


def test_cli_backfills_with_the_config_and_refuses_bad_input_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kept: list[None] = []  # malloc is left alone: this process (pytest) goes on after main()
    monkeypatch.setattr(cli_backfill, "keep_freed_memory", lambda: kept.append(None))
    config = _config_file(tmp_path, DECLARED)
    calls = _calls(300)
    times = [dt.datetime.fromtimestamp(c["time"], dt.timezone.utc).isoformat() for c in calls]
    times[157] = "yesterday"
    bad = _write_csv(tmp_path / "bad.csv", calls, times)
    args = ["backfill", "--model", "fraud", "--config", str(config)]
    assert main([*args, "--timestamp", "when", str(bad)]) == 1
    assert "no column 'when' (--timestamp); its columns are ts, amount" in capsys.readouterr().err
    assert main([*args, "--timestamp", "ts", str(bad)]) == 1
    assert f"{bad}:159: column 'ts': 'yesterday' is not a time" in capsys.readouterr().err
    good = _write_csv(tmp_path / "good.csv", calls)
    assert main([*args, "--timestamp", "ts", "--json", str(good)]) == 0
    out = capsys.readouterr().out
    assert '"rows": 300' in out and '"score": "output.score"' in out
    assert '"ignored": ["amount", "country"]' in out  # the model declares its fields: not these
    assert '"already_stored": 0' in out
    assert main([*args, "--timestamp", "ts", str(good)]) == 0  # again: nothing new, and it says so
    out = capsys.readouterr().out
    assert out.startswith("nothing new: the 300 calls of model 'fraud' (")
    assert "were already stored" in out and "backfilled 300" not in out
    assert main(["sql", "--config", str(config), "--json",
                 "SELECT countIf(quantity = 'output.score') > 0 AS scored FROM "
                 "ml_segment_aggregates"]) == 0  # fmt: skip
    assert '"rows": [[true]]' in capsys.readouterr().out.replace("1]]", "true]]")
    assert kept == []


def test_only_the_segwatch_program_keeps_freed_memory(tmp_path: Path) -> None:
    """The console script and ``python -m segwatch.collector.cli`` are the program (their
    process ends with the command); a process that calls ``main()`` itself is not."""
    assert not cli_backfill.is_the_program()  # pytest's __main__
    script = Path(sys.executable).with_name("segwatch")  # the console script pip wrote
    for path in (script, Path(cli_package.__file__).with_name("__main__.py")):
        program = types.ModuleType("program")
        exec(compile(path.read_text().replace("sys.exit(main())", "pass"), str(path), "exec"),
             program.__dict__)  # fmt: skip
        assert cli_backfill.is_the_program(program), path
    caller = types.ModuleType("caller")
    caller.main = lambda: 0  # type: ignore[attr-defined]  # a main of its own
    assert not cli_backfill.is_the_program(caller)


def test_a_store_through_segwatch_serve_reports_no_already_stored_count(  # type: ignore[no-untyped-def]
    store_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``DuplicatedInsertedBlocks`` is the serving node's: a served (or clustered) store's
    readings say nothing sure of this backfill's inserts, so none is read or reported."""
    config = tmp_path / "segwatch.yaml"
    config.write_text(f"storage:\n  dsn: {store_server.url}/segwatch\n{DECLARED}")
    good = _write_csv(tmp_path / "good.csv", _calls(50))
    args = ["backfill", "--model", "fraud", "--config", str(config), "--timestamp", "ts"]
    assert main([*args, str(good)]) == 0
    assert main([*args, str(good)]) == 0  # again: stored once, but not counted as such
    out = capsys.readouterr().out
    assert out.count("backfilled 50 calls of model 'fraud'") == 2 and "already" not in out
    assert main([*args, "--json", str(good)]) == 0
    assert '"already_stored": null' in capsys.readouterr().out
    assert main(["sql", "--config", str(config), "--json",
                 "SELECT count() FROM ml_model_calls"]) == 0  # fmt: skip
    assert '"rows": [[50]]' in capsys.readouterr().out


def test_cli_refuses_while_a_collector_holds_the_store(
    collector, store_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "segwatch.yaml"
    config.write_text(f"storage:\n  dsn: {store_dsn}\n")
    path = _write_csv(tmp_path / "calls.csv", _calls(10))
    code = main(["backfill", "--model", "fraud", "--timestamp", "ts", "--config", str(config),
                 str(path)])  # fmt: skip
    assert code == 1
    assert "a running collector holds this embedded store" in capsys.readouterr().err


def test_parquet_times_and_nan_are_read_as_times_and_missing(client, tmp_path: Path) -> None:
    import pandas as pd

    calls = _calls(500, seed=9)
    frame = pd.DataFrame({
        "when": pd.to_datetime([c["time"] for c in calls], unit="s", utc=True),
        "amount": [float("nan") if c["amount"] is None else c["amount"] for c in calls],
        "country": [c["country"] for c in calls],
    })  # fmt: skip
    path = tmp_path / "calls.parquet"
    frame.to_parquet(path)
    result = backfill_file(client, str(path), model="fraud", timestamp="when")
    assert result.rows == 500 and result.first == dt.datetime.fromtimestamp(START, dt.timezone.utc)
    missing = client.query(
        "SELECT quantity, sum(missing) FROM ml_segment_aggregates WHERE segment_dim = '__all__' "
        "GROUP BY quantity ORDER BY quantity"
    ).result_rows
    assert missing == [("feature.amount", sum(c["amount"] is None for c in calls)),
                       ("feature.country", sum(c["country"] is None for c in calls))]  # fmt: skip


def test_a_column_of_numbers_stays_numbers_in_a_chunk_where_some_text_turns_up(
    client, tmp_path: Path
) -> None:
    calls = [dict(c, amount=c["amount"] or 1.0) for c in _calls(600, seed=4)]
    calls[450]["amount"] = "n/a"  # in the third chunk: pandas reads that chunk's column as text
    path = _write_csv(tmp_path / "calls.csv", calls)
    backfill_file(client, str(path), model="fraud", timestamp="ts", chunk_rows=200)
    (numbers, categories), = client.query(
        "SELECT sum(numeric_count), sumMap(categories) FROM ml_segment_aggregates "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.amount'"
    ).result_rows  # fmt: skip
    assert (numbers, categories) == (599, {"n/a": 1})


def test_a_nan_written_as_text_is_missing_as_in_a_baseline(client, tmp_path: Path) -> None:
    """``NaN`` in a CSV cell: ``segwatch baseline`` reads it as MISSING, so backfill must too
    (a text ``NaN`` made the column categories, and the two paths drifted apart)."""
    calls = [dict(c, amount=c["amount"] or 1.0) for c in _calls(300, seed=5)]
    for i, text in ((3, "NaN"), (4, "nan"), (250, "NaN")):
        calls[i]["amount"] = text
    path = _write_csv(tmp_path / "calls.csv", calls)
    backfill_file(client, str(path), model="fraud", timestamp="ts", chunk_rows=200)
    (numbers, missing, categories), = client.query(
        "SELECT sum(numeric_count), sum(missing), sumMap(categories) FROM ml_segment_aggregates "
        "WHERE segment_dim = '__all__' AND quantity = 'feature.amount'"
    ).result_rows  # fmt: skip
    assert (numbers, missing, categories) == (297, 3, {})


def test_text_kept_as_pandas_reads_it_gives_the_object_arrays_digest_times_and_labels(
    tmp_path: Path,
) -> None:
    """read_chunks keeps pandas' text arrays (no object array of Python strings): the chunk's
    digest (the deduplication token) is the one the object array gives, so a file backfilled
    before is still recognized; its times and labels are the same too."""
    pd = pytest.importorskip("pandas")
    from segwatch.collector.profile import logged_calls as lc

    path = tmp_path / "calls.csv"
    path.write_text("ts,country,amount,note\n2026-01-01T00:00:00Z,BR,1.5,\n"
                    "2026-01-01T00:00:01Z,,2,x\n2026-01-01T00:00:02Z,nan,,NA\n"
                    "2026-01-01T00:00:03.5Z,US,3,x\n")  # fmt: skip
    (chunk,) = lc.read_chunks(str(path))
    assert lc.is_pandas_text(chunk.columns["country"])
    as_objects = lc.LoggedChunk(
        {name: np.asarray(values, dtype=object) if lc.is_pandas_text(values) else values
         for name, values in chunk.columns.items()}, 2)  # fmt: skip
    assert lc.chunk_digest(chunk) == lc.chunk_digest(as_objects)
    changed = dict(chunk.columns, country=pd.array(["BR", None, None, "DE"], dtype="str"))
    assert lc.chunk_digest(lc.LoggedChunk(changed, 2)) != lc.chunk_digest(chunk)
    times = lc.call_times(chunk.columns["ts"], "ts", 2, "f")
    assert list(times) == list(lc.call_times(as_objects.columns["ts"], "ts", 2, "f"))
    assert times[3] - times[0] == 3_500_000_000
    for name in ("country", "note"):
        (kept,), (objects,) = (lc._column(c.columns[name]).label_chunks
                               for c in (chunk, as_objects))  # fmt: skip
        assert (list(kept.rows), list(kept.codes), kept.dictionary) == (
            list(objects.rows), list(objects.codes), objects.dictionary)  # fmt: skip
    assert lc._column(chunk.columns["country"]).label_chunks[0].dictionary == ["BR", "US"]
    bad = dict(chunk.columns, ts=pd.array(["2026-01-01T00:00:00Z", "soon"] * 2, dtype="str"))
    with pytest.raises(ValueError, match="f:3: column 'ts': 'soon' is not a time"):
        lc.call_times(bad["ts"], "ts", 2, "f")


def test_a_backfill_into_buckets_rolled_up_before_is_rolled_up_again(
    client: Any, tmp_path: Path
) -> None:
    """A detector run rolled the file's hour up before the backfill (from other calls):
    the backfill marks its buckets late, so the next roll-up counts its calls too."""
    from segwatch.clickhouse.rollups import FIVE_MINUTES, ONE_HOUR, roll_up

    hour = (dt.datetime.fromtimestamp(START, dt.timezone.utc),
            dt.datetime.fromtimestamp(START + 3600, dt.timezone.utc))  # fmt: skip
    calls = _calls(400)
    backfill_file(client, str(_write_csv(tmp_path / "a.csv", calls[:100])), model="fraud",
                  timestamp="ts")  # fmt: skip
    for rollup in (FIVE_MINUTES, ONE_HOUR):
        assert roll_up(client, rollup, *hour) > 0, rollup.table
    backfill_file(client, str(_write_csv(tmp_path / "b.csv", calls[100:])), model="fraud",
                  timestamp="ts")  # fmt: skip
    for rollup in (FIVE_MINUTES, ONE_HOUR):
        assert roll_up(client, rollup, *hour) > 0, rollup.table  # rolled up again
        (rolled,) = client.query(
            f"SELECT sum(count) FROM {rollup.table} FINAL "
            "WHERE segment_dim = '__all__' AND quantity = 'feature.amount'"
        ).result_rows[0]
        assert rolled == 400, rollup.table
        # Made after the run read the marks, the roll-up stands for the next detector of
        # the run, seconds after the backfill (not rolled up by every one of them again).
        assert roll_up(client, rollup, *hour) == 0, rollup.table
    # Run again (as after one stopped between a chunk's inserts and its marks), it stores
    # nothing twice and marks its buckets again.
    latest = "SELECT count(DISTINCT bucket_start), max(marked_at) FROM ml_late_buckets"
    buckets, marked = client.query(latest).result_rows[0]
    again = backfill_file(client, str(tmp_path / "b.csv"), model="fraud", timestamp="ts")
    assert again.already_stored == 300
    assert client.query(latest).result_rows[0][0] == buckets
    assert client.query(latest).result_rows[0][1] > marked
