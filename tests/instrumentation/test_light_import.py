"""The base install stays light: the instrumentation loads no collector dependency."""

from __future__ import annotations

import json
import subprocess
import sys


def test_importing_instrumentation_loads_no_heavy_modules() -> None:
    code = (
        "import sys, json; import segwatch.instrumentation as s; "
        "from segwatch.instrumentation import monitor; monitor(model='m'); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(json.loads(out.stdout))
    heavy = {"grpc", "numpy", "pandas", "clickhouse_connect", "chdb", "yaml", "segwatch.collector"}
    assert not heavy & {m.split(".")[0] for m in modules} - {"segwatch"}
    assert "segwatch.collector" not in modules
    assert not any(m.startswith("grpc._server") for m in modules)
    # The service configures the SDK (or not): the instrumentation needs the API only.
    assert not any(m.startswith(("opentelemetry.sdk", "opentelemetry.exporter")) for m in modules)
