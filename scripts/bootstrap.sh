#!/usr/bin/env bash
# Set up everything the demo and the tests need on a fresh Debian machine with Python 3.11:
# a virtualenv in .venv with this package installed, and configurable-http-proxy (npm) for
# JupyterHub. Safe to run again; it only installs what is missing.
#   scripts/bootstrap.sh          runtime + test + bench extras
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        if [ ! -f /tmp/.elastic-apt-updated ]; then apt-get update -qq && touch /tmp/.elastic-apt-updated; fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
    else
        echo "bootstrap: please install $* (needs root and apt-get)" >&2
        return 1
    fi
}

if ! command -v "$PY" >/dev/null; then apt_install python3 python3-venv python3-dev; fi
if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then apt_install python3-venv; fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi

if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[test,bench]"
    rm -f .venv/.installed-*; touch "$stamp"
fi
# PyTorch only from a CPU wheel already on this machine (the tests of the agent's torch support
# run where it is and skip where it is not): never from the index, whose default build is the
# multi-gigabyte CUDA one. TORCH_WHEEL names another wheel file.
TORCH_WHEEL=${TORCH_WHEEL:-$(ls /opt/wheels/torch-*+cpu-cp311-*.whl 2>/dev/null | sort | tail -n 1 || true)}
if [ -n "$TORCH_WHEEL" ] && [ -f "$TORCH_WHEEL" ] \
        && ! .venv/bin/python -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is None)'; then
    .venv/bin/python -m pip install -q "$TORCH_WHEEL"
fi
if [ ! -x .venv/node/node_modules/.bin/configurable-http-proxy ]; then
    mkdir -p .venv/node
    (cd .venv/node && npm install --silent --no-audit --no-fund --prefix . configurable-http-proxy@5 >/dev/null)
fi
# byte-compile our own (editable) packages as a wheel install would: kernels then never compile
# the agent from source, even under PYTHONDONTWRITEBYTECODE
.venv/bin/python -m compileall -q kernel_agent elastic_spawner >/dev/null || true
echo "bootstrap: ready ($ROOT/.venv)"
