#!/usr/bin/env bash
# One call of the device tool (a GPU machine as it comes: its own Python with torch and triton,
# no network, no venv), everything under $OUT:
#
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=540)
#
# .whl/ holds the wheels the machine lacks (expecttest, for the tests: `pip download expecttest
# --no-deps -d .whl` here; /.whl/ is ignored by git, hence carry).  Then `make gpu-check`
# (benchmarks/gpu_check.py): the in-place build, every backend against the reference, the tests
# marked cuda, the counted code, the layer and ResNet-50 timed; designed to end inside 8 minutes,
# and stopped at LIMIT_S so that what it wrote still comes back.  $OUT gets session.log (this
# script's whole output), report.md, results.json, build.log, check.log, tests.log, profile.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/runs/gpu-session}" PYTHONUNBUFFERED=1
LIMIT_S="${LIMIT_S:-510}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"
WHEELS="${WHEELS:-.whl}"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  "$PYTHON" -c "import sys, torch; print(sys.executable, sys.version.split()[0], 'torch', torch.__version__)"
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    # expecttest and whatever else was carried; --no-deps: carry each one needed
    "$PYTHON" -m pip install -q --no-index --no-deps "$WHEELS"/*.whl || echo "installing $WHEELS failed"
  fi
  if command -v make >/dev/null; then
    timeout "$LIMIT_S" make --no-print-directory gpu-check PYTHON="$PYTHON"
  else
    timeout "$LIMIT_S" "$PYTHON" -m benchmarks.gpu_check --build
  fi
  echo "gpu-check: exit $? (124: stopped at ${LIMIT_S} s)"
  date -u
} 2>&1 | tee "$OUT/session.log"
