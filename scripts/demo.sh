#!/usr/bin/env bash
# Install the project into .venv and build the bundled real sample into build/sample.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install --disable-pip-version-check -q "torch==2.13.0"
.venv/bin/pip install --disable-pip-version-check -q -e .
.venv/bin/shv-build --urls manifests/sample/urls.txt --out build/sample "$@"
