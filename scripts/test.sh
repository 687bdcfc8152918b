#!/usr/bin/env bash
# Install the project with its test extras into .venv and run the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first: 2.13.0 is a CPU wheel on the reference machine; any 2.4..2.14 build works.
.venv/bin/pip install --disable-pip-version-check -q "torch==2.13.0"
.venv/bin/pip install --disable-pip-version-check -q -e ".[test]"
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
