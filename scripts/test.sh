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
# the build report's test drives a real headless browser: Debian's Chromium, installed when missing
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends chromium
  else
    echo "scripts/test.sh: /usr/bin/chromium is missing and this is not root: the report test will fail" \
         "(install it with: sudo apt-get install chromium)" >&2
  fi
fi
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
