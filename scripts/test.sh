#!/usr/bin/env bash
# Every gate, cheapest first, each stopping the run when it fails: lint, types, then the test
# tiers (unit, e2e, multinode). The README's test command and .ci/run call this after
# scripts/bootstrap.sh. Extra arguments go to every pytest run (e.g. -x, -k name).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=.venv/bin/python

step() { printf '\n== %s\n' "$1"; }

step "ruff (lint and format)"
$PY -m ruff check serving variants benchmarks tests
$PY -m ruff format --check serving variants benchmarks tests
step "mypy (the modules [tool.mypy] in pyproject.toml lists)"
$PY -m mypy
for tier in unit e2e multinode; do
  step "pytest: $tier tier"
  $PY -m pytest -q -m "$tier" "$@"
done
