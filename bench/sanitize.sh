#!/usr/bin/env bash
# The compiled loops (collector/segwatch/collector/_kernels.c) under AddressSanitizer
# and UBSan, on many generated inputs: the kernel tests (C against numpy) and the span
# reader's differential tests (against the reference decoder), EXAMPLES each (3000).
# Any out-of-bounds access or undefined behaviour aborts the run with a report.
# Run from anywhere after `pip install -e ".[dev]"`: bash bench/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${EXAMPLES:-3000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc=${CC:-gcc}
"$cc" -O1 -g -std=c99 -fsanitize=address,undefined -fno-sanitize-recover=all \
    -fno-omit-frame-pointer -ffp-contract=off -shared -fPIC \
    -o "$work/_kernels.so" collector/segwatch/collector/_kernels.c -lm
for test in test_kernels.py test_span_scan.py; do
    sed "s/max_examples=[0-9]*/max_examples=$examples/" "tests/collector/$test" > "$work/$test"
done
# conftest.py imports its sibling wheel_build.py.
cp tests/conftest.py tests/wheel_build.py "$work/"
# SEGWATCH_KERNELS=auto: the compiled loops must run here, whatever the caller's environment.
SEGWATCH_KERNELS=auto SEGWATCH_KERNELS_LIBRARY="$work/_kernels.so" \
LD_PRELOAD="$("$cc" -print-file-name=libasan.so):$("$cc" -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
    .venv/bin/python -m pytest -q -p no:cacheprovider "$work/test_kernels.py" \
    "$work/test_span_scan.py"
