#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: set up (scripts/bootstrap.sh), start the S3 protocol
# server the integration tests use (Ceph RGW from Debian packages, when available), run pytest,
# stop every server it started. Extra arguments go to pytest.
# pytest's exit code 5 ("no tests collected") is a failure here, never a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
bash scripts/bootstrap.sh || exit 1
echo "test.sh: set-up took $((SECONDS - started)) s" >&2
export PATH="$PWD/.venv/bin:$PWD/.venv/node/node_modules/.bin:$PATH"

cleanup() {
    if [ -n "${RGW_STARTED:-}" ]; then bash scripts/ceph-rgw.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT INT TERM

if [ -f scripts/ceph-rgw.sh ] && [ "${ELASTIC_SKIP_RGW:-0}" != 1 ]; then
    started=$SECONDS
    if rgw_env=$(bash scripts/ceph-rgw.sh start) && [ -n "$rgw_env" ] && eval "$rgw_env"; then
        RGW_STARTED=1
        echo "test.sh: Ceph RGW at $ELASTIC_TEST_S3_ENDPOINT ($((SECONDS - started)) s)" >&2
    else
        echo "test.sh: Ceph RGW could not be started; S3 tests use moto only" >&2
    fi
fi

# Four workers on two CPUs (ELASTIC_TEST_WORKERS; 0 runs everything in this process), whole files
# per worker (--dist loadfile): module-scoped servers and kernels are started once, and a file's
# tests keep their order. The tests spend much of their time waiting on kernels, servers and hubs
# (two workers kept the CPUs about 60 % busy): with four the engine tests took a quarter less
# wall time on a loaded machine, the whole suite about 6 % less on a quiet one (1330 s against
# 1410 s, CPUs 177 % busy), and it passed that way with the machine's load at 9.
# Files are handed out in collection order (--no-loadscope-reorder; by default xdist would start
# with the files holding the most tests and leave the long single-test files for the end), and
# tests/conftest.py collects the files with slow tests first.
# Everything a test starts is isolated per worker: kernels talk over Unix sockets in private
# directories, servers take ports from the worker's own part of the range (tests/conftest.py),
# S3 tests use unique prefixes (or buckets) on the shared Ceph RGW and a moto server per worker.
python -m pytest -n "${ELASTIC_TEST_WORKERS:-4}" --dist loadfile --no-loadscope-reorder "$@"
rc=$?
if [ "$rc" = 5 ]; then echo "test.sh: pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
