#!/usr/bin/env bash
# End-to-end run on a real kind or k3d cluster: build the images, install a development S3
# store + the elastic-spawner chart + zero-to-jupyterhub, then run e2e/test_drain.py
# (spawn a user, run cells, kubectl drain the user's node, check the variables on another node).
#
#   e2e/run.sh                  # kind cluster "elastic-e2e" (created if missing), full run
#   E2E_CLUSTER=k3d e2e/run.sh  # k3d instead of kind
#   E2E_SKIP_BUILD=1 ...        # images already built and loaded
#   E2E_KEEP=1 ...              # keep the releases (and the cluster) afterwards
#
# Needs: docker, kubectl, kind or k3d, Python with the test extras (.venv). helm comes from
# scripts/chart-check.sh --tools (PyPI) unless E2E_HELM points to one. See e2e/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER_TOOL=${E2E_CLUSTER:-kind}
CLUSTER_NAME=${E2E_CLUSTER_NAME:-elastic-e2e}
NAMESPACE=${E2E_NAMESPACE:-elastic-e2e}
Z2JH_VERSION=${E2E_Z2JH_VERSION:-4.4.0}
Z2JH_REPO=https://hub.jupyter.org/helm-chart/
PYTHON=${E2E_PYTHON:-"$ROOT/.venv/bin/python"}
TAG=e2e

log() { printf '[e2e] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "missing tool: $1 ($2)"; }

need docker "builds the hub and single-user images"
need kubectl "talks to the cluster"
case "$CLUSTER_TOOL" in
    kind) need kind "https://kind.sigs.k8s.io/" ;;
    k3d) need k3d "https://k3d.io/" ;;
    *) die "E2E_CLUSTER must be kind or k3d, not $CLUSTER_TOOL" ;;
esac

if [ -n "${E2E_HELM:-}" ]; then
    HELM=$E2E_HELM
else
    HELM=$(bash "$ROOT/scripts/chart-check.sh" --tools | sed -n 's/^helm=//p')
fi
[ -x "$HELM" ] || die "no helm binary ($HELM)"

# 1. cluster: one control plane + two workers
if [ "$CLUSTER_TOOL" = kind ]; then
    if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
        log "creating kind cluster $CLUSTER_NAME (1 control plane, 2 workers)"
        kind create cluster --name "$CLUSTER_NAME" --config "$ROOT/e2e/kind.yaml" --wait 180s
    fi
    kubectl config use-context "kind-$CLUSTER_NAME" >/dev/null
else
    if ! k3d cluster list "$CLUSTER_NAME" >/dev/null 2>&1; then
        log "creating k3d cluster $CLUSTER_NAME (1 server, 2 agents)"
        k3d cluster create "$CLUSTER_NAME" --agents 2 --wait \
            --k3s-node-label "node-role.kubernetes.io/control-plane=@server:0"
    fi
    kubectl config use-context "k3d-$CLUSTER_NAME" >/dev/null
fi

# 2. images (the build context is the repository: the images install this checkout)
if [ -z "${E2E_SKIP_BUILD:-}" ]; then
    log "building images"
    docker build -f "$ROOT/images/Dockerfile.hub" -t "elastic-spawner/k8s-hub:$TAG" "$ROOT"
    docker build -f "$ROOT/images/Dockerfile.singleuser" -t "elastic-spawner/singleuser:$TAG" "$ROOT"
    for image in "elastic-spawner/k8s-hub:$TAG" "elastic-spawner/singleuser:$TAG"; do
        if [ "$CLUSTER_TOOL" = kind ]; then
            kind load docker-image --name "$CLUSTER_NAME" "$image"
        else
            k3d image import --cluster "$CLUSTER_NAME" "$image"
        fi
    done
fi

# 3. zero-to-jupyterhub, pinned, with the snippet for this release + the e2e overrides. First:
# the migrator Deployment reads its API token from z2jh's hub Secret.
log "installing zero-to-jupyterhub $Z2JH_VERSION into namespace $NAMESPACE"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
"$HELM" upgrade --install jhub jupyterhub --repo "$Z2JH_REPO" --version "$Z2JH_VERSION" \
    --namespace "$NAMESPACE" \
    --values "$ROOT/helm/z2jh-values.yaml" --values "$ROOT/e2e/values-z2jh.yaml" \
    --wait --timeout 15m

# 4. the elastic-spawner chart (RBAC, S3 Secret, migrator, development store + bucket Job)
log "installing elastic-spawner"
"$HELM" upgrade --install elastic-spawner "$ROOT/helm/elastic-spawner" \
    --namespace "$NAMESPACE" --values "$ROOT/e2e/values-elastic.yaml" --wait --timeout 10m
# the hub picks up the store settings (hub.extraEnv from the chart's Secret) at its next start
kubectl --namespace "$NAMESPACE" rollout restart deployment/hub >/dev/null
kubectl --namespace "$NAMESPACE" rollout status deployment/hub --timeout 5m

# 5. the suite
log "running e2e/test_drain.py"
rc=0
E2E_NAMESPACE=$NAMESPACE "$PYTHON" -m pytest "$ROOT/e2e" -v -p no:cacheprovider || rc=$?

if [ -z "${E2E_KEEP:-}" ]; then
    log "removing the releases (E2E_KEEP=1 keeps them)"
    "$HELM" uninstall jhub --namespace "$NAMESPACE" || true
    "$HELM" uninstall elastic-spawner --namespace "$NAMESPACE" || true
fi
exit "$rc"
