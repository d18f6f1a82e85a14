"""The long fuzz run: 100,000+ generated OTLP payloads through decode → process → store.

The payloads are ``tests/otlp_fuzz.py``'s (hypothesis: spans with model-call
attributes of every type, odd ids, names and times, half of them damaged
bytes), fed to the collector's processor on a spool and a fresh embedded
store, in rounds. Each round checks the same as ``tests/collector/test_fuzz.py``
(every payload answered or refused as INVALID_ARGUMENT, the two decoders
agree, the store holds exactly the acknowledged calls) and prints the
process's RSS, which must not grow from round to round.

``--atheris SECONDS`` adds a coverage-guided run (atheris, if installed:
``pip install atheris``) of raw bytes into the processor, seeded with
generated payloads.

Run: ``python bench/fuzz.py [--payloads 100000] [--rounds 10] [--atheris 600]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from hypothesis import HealthCheck, given, settings
from otlp_fuzz import PipelineUnderFuzz, payloads

from segwatch.clickhouse.migrate import apply_migrations
from segwatch.clickhouse.store import open_client, parse_dsn


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def hypothesis_rounds(client: object, spool: Path, total: int, rounds: int) -> None:
    pipeline = PipelineUnderFuzz(client, spool)
    per_round = total // rounds
    started = time.perf_counter()
    try:
        for round_ in range(1, rounds + 1):

            @settings(max_examples=per_round, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(payloads)
            def feed(payload: bytes) -> None:
                pipeline.feed(payload)

            feed()
            pipeline.processor.flush(timeout=300)
            stored = client.query("SELECT count() FROM ml_model_calls").result_rows[0][0]  # type: ignore[attr-defined]
            print(f"round {round_:2}: {pipeline.payloads:8,} payloads, {pipeline.refused:7,} "
                  f"refused, {pipeline.accepted:7,} calls accepted ({stored:,} stored), "
                  f"{pipeline.rejected:7,} spans rejected; RSS {_rss_mib():.0f} MiB; "
                  f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
            if stored != pipeline.accepted:
                raise SystemExit(f"{stored} calls stored, {pipeline.accepted} acknowledged")
    finally:
        pipeline.close()


def atheris_run(client: object, spool: Path, seconds: float) -> None:
    import atheris  # optional: pip install atheris

    pipeline = PipelineUnderFuzz(client, spool)
    corpus = Path(tempfile.mkdtemp(prefix="segwatch-atheris-"))

    @settings(max_examples=200, database=None, suppress_health_check=list(HealthCheck))
    @given(payloads)
    def seed(payload: bytes) -> None:
        (corpus / f"{len(list(corpus.iterdir()))}.bin").write_bytes(payload)

    seed()
    deadline = time.monotonic() + seconds

    def one(data: bytes) -> None:
        if time.monotonic() > deadline:
            pipeline.processor.flush(timeout=300)
            stored = client.query("SELECT count() FROM ml_model_calls").result_rows[0][0]  # type: ignore[attr-defined]
            print(f"atheris: {pipeline.payloads:,} payloads, {pipeline.refused:,} refused, "
                  f"{pipeline.accepted:,} calls accepted ({stored:,} in the store, with any "
                  "from the rounds before); "
                  f"RSS {_rss_mib():.0f} MiB", flush=True)  # fmt: skip
            pipeline.close()
            os._exit(0)  # libFuzzer reports any other exit as a crash and writes an artifact
        pipeline.feed(data)

    atheris.instrument_all()  # coverage of the already imported collector: the guidance
    atheris.Setup([sys.argv[0], str(corpus), "-max_len=4096"], one)
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, default=100_000)
    parser.add_argument(
        "--rounds", type=int, default=100,
        help="hypothesis keeps what it generated for a run: short runs keep its memory flat",
    )  # fmt: skip
    parser.add_argument("--atheris", type=float, metavar="SECONDS", help="then fuzz with atheris")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segwatch-fuzz-") as tmp:
        client = open_client(parse_dsn(f"chdb://{tmp}/store"))
        apply_migrations(client)
        if args.payloads:
            hypothesis_rounds(client, Path(tmp) / "spool", args.payloads, args.rounds)
        if args.atheris:
            atheris_run(client, Path(tmp) / "spool-atheris", args.atheris)


if __name__ == "__main__":
    main()
