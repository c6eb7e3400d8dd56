"""The Helm chart (helm/elastic-spawner) and the Dockerfiles (images/), checked without a cluster.

Runs in the test process. helm, kubernetes-validate and yamllint come from PyPI into a cached
venv (.venv-chart/) through scripts/chart-check.sh, never into the project's environment; the
tests skip, saying so, only when PyPI cannot be reached. What is checked:

- scripts/chart-check.sh: `helm lint --strict` and `helm template | kubernetes-validate --strict`
  for the default values and every values file in helm/ci/;
- the rendered manifests (PyYAML): RBAC rules equal the Kubernetes API calls the code makes, per
  process; credentials only in the Secret and only through secretKeyRef; dev store off by
  default; strict values schema; helm/z2jh-values.yaml equals what the chart prints;
- images/Dockerfile.*: a small Dockerfile checker (instructions, pinned FROM, no secrets, pip
  install of this checkout).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "elastic-spawner"
CI_VALUES = ROOT / "helm" / "ci"
SCRIPT = ROOT / "scripts" / "chart-check.sh"
NAMESPACE = "jhub"

pytestmark = pytest.mark.slow


# ---- tools ---------------------------------------------------------------------------------

def _pypi_reachable() -> bool:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/"
    if not index.startswith(("http://", "https://")):
        return True  # a local index: an install failure is a real failure
    try:
        with urllib.request.urlopen(index + "kubernetes-validate/", timeout=10):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    """Paths of helm, kubernetes-validate and yamllint (installed into the cache on first use)."""
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to run scripts/chart-check.sh")
    proc = subprocess.run(["bash", str(SCRIPT), "--tools"], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        if not _pypi_reachable():
            pytest.skip("PyPI is unreachable: cannot install helm (kubectl-layer wheel), "
                        "kubernetes-validate and yamllint for the chart checks")
        pytest.fail(f"scripts/chart-check.sh --tools failed:\n{proc.stderr[-3000:]}")
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert {"helm", "kubernetes-validate", "yamllint"} <= set(paths), proc.stdout
    return paths


def helm(tools: dict[str, str], *args: str, check: bool = True,
         tmp_home: Path | None = None) -> subprocess.CompletedProcess[str]:
    home = tmp_home or Path(os.environ.get("TMPDIR", "/tmp"))
    env = {**os.environ, "HOME": str(home), "HELM_CACHE_HOME": str(home / ".helm-cache"),
           "HELM_CONFIG_HOME": str(home / ".helm-config"), "HELM_DATA_HOME": str(home / ".helm-data")}
    proc = subprocess.run([tools["helm"], *args], capture_output=True, text=True, env=env,
                          timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {shlex.join(args)} failed:\n{proc.stderr}")
    return proc


def render(tools: dict[str, str], *value_files: Path, sets: tuple[str, ...] = (),
           release: str = "elastic-spawner", chart: Path = CHART) -> list[dict[str, Any]]:
    args = ["template", release, str(chart), "--namespace", NAMESPACE]
    for f in value_files:
        args += ["--values", str(f)]
    for s in sets:
        args += ["--set", s]
    out = helm(tools, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert found, f"no {kind}/{name} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


# ---- the CI check itself -----------------------------------------------------------------------

def test_chart_check_script_lints_and_validates(tools: dict[str, str]) -> None:
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "OK: chart lints and validates" in proc.stderr


def test_scripts_are_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    proc = subprocess.run(["shellcheck", str(SCRIPT), str(ROOT / "e2e" / "run.sh")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# ---- RBAC: exactly what the code calls ---------------------------------------------------------

# kubernetes_asyncio method name -> (API group, resource); verbs come from the method prefix.
RESOURCES = {
    "pod": ("", "pods"),
    "pod_resize": ("", "pods/resize"),
    "pod_eviction": ("", "pods/eviction"),
    "pod_status": ("", "pods/status"),
    "pod_disruption_budget": ("policy", "poddisruptionbudgets"),
    "event": ("", "events"),
    "node": ("", "nodes"),
    "persistent_volume_claim": ("", "persistentvolumeclaims"),
    "secret": ("", "secrets"),
    "service": ("", "services"),
}
VERBS = {"read": "get", "list": "list", "create": "create", "delete": "delete",
         "patch": "patch", "replace": "update"}
CALL_RE = re.compile(
    r"\.(read|list|create|delete|patch|replace)_(namespaced_)?([a-z_]+?)(_for_all_namespaces)?\(")
# Which process runs each module that talks to the Kubernetes API.
HUB_MODULES = ("elastic_spawner/kube.py", "elastic_spawner/k8s/")
MIGRATOR_MODULES = ("elastic_spawner/drain.py", "elastic_spawner/resize.py",
                    "elastic_spawner/service/")
# z2jh's own hub Role (templates/hub/rbac.yaml): what KubeSpawner needs, granted already.
Z2JH_HUB_RULES = {(g, r, v) for g, r in (("", "pods"), ("", "persistentvolumeclaims"),
                                           ("", "secrets"), ("", "services"))
                  for v in ("get", "watch", "list", "create", "delete")} | {
    ("", "events", v) for v in ("get", "watch", "list")}


def call_args(text: str, open_paren: int) -> str:
    """The argument text of the call whose "(" is at `open_paren` (balanced parentheses)."""
    depth = 0
    for i in range(open_paren, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[open_paren + 1:i]
    return text[open_paren + 1:]


def code_calls() -> dict[str, set[tuple[str, str, str]]]:
    """{"hub"|"migrator": {(group, resource, verb)}} from the Kubernetes client calls in the code."""
    calls: dict[str, set[tuple[str, str, str]]] = {"hub": set(), "migrator": set()}
    for path in sorted((ROOT / "elastic_spawner").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        for m in CALL_RE.finditer(text):
            verb, namespaced, res, all_ns = m.group(1), m.group(2), m.group(3), m.group(4)
            if res not in RESOURCES:
                continue  # not a Kubernetes client call (read_text, create_task, ...)
            if not namespaced and not all_ns and res != "node":
                continue
            group, resource = RESOURCES[res]
            if rel.startswith(HUB_MODULES):
                proc = "hub"
            elif rel.startswith(MIGRATOR_MODULES):
                proc = "migrator"
            else:
                raise AssertionError(f"{rel} calls {m.group(0)}...): say in tests/test_chart.py "
                                     "which process runs it (HUB_MODULES / MIGRATOR_MODULES)")
            calls[proc].add((group, resource, VERBS[verb]))
            if verb == "list" and re.search(r"\bwatch\s*=\s*True", call_args(text, m.end() - 1)):
                calls[proc].add((group, resource, "watch"))
    return calls


def granted(docs: list[dict[str, Any]], subject: str) -> set[tuple[str, str, str]]:
    """(group, resource, verb) granted to ServiceAccount `subject` by the rendered bindings."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs
             if d["kind"] in ("Role", "ClusterRole")}
    out: set[tuple[str, str, str]] = set()
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == subject
                   for s in b["subjects"]):
            continue
        role = roles[(b["roleRef"]["kind"], b["roleRef"]["name"])]
        for rule in role["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        out.add((g, r, v))
    return out


def test_rbac_grants_exactly_what_the_code_calls(tools: dict[str, str]) -> None:
    calls = code_calls()
    assert calls["hub"] and calls["migrator"], f"no Kubernetes calls found: {calls}"
    docs = render(tools)
    hub_extra = granted(docs, "hub")
    migrator = granted(docs, "elastic-spawner-migrator")
    assert hub_extra == calls["hub"] - Z2JH_HUB_RULES, (
        f"hub RBAC: chart grants {sorted(hub_extra)}, code calls {sorted(calls['hub'])}")
    assert migrator == calls["migrator"], (
        f"migrator RBAC: chart grants {sorted(migrator)}, code calls {sorted(calls['migrator'])}")


def test_rbac_nodes_are_cluster_scoped_and_read_only(tools: dict[str, str]) -> None:
    docs = render(tools)
    (cr,) = of_kind(docs, "ClusterRole")
    assert cr["rules"] == [{"apiGroups": [""], "resources": ["nodes"],
                            "verbs": sorted(cr["rules"][0]["verbs"], key=["get", "list", "watch"].index)}]
    assert set(cr["rules"][0]["verbs"]) <= {"get", "list", "watch"}
    assert cr["metadata"]["name"].startswith(f"{NAMESPACE}-")  # cluster-unique name
    (crb,) = of_kind(docs, "ClusterRoleBinding")
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "elastic-spawner-migrator",
                                "namespace": NAMESPACE}]
    for role in of_kind(docs, "Role") + of_kind(docs, "ClusterRole"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], role


def test_managed_migrator_gets_its_rules_on_the_hub_service_account(tools: dict[str, str]) -> None:
    docs = render(tools, sets=("migrator.mode=managed",))
    assert not of_kind(docs, "Deployment") and not of_kind(docs, "ServiceAccount")
    calls = code_calls()
    assert granted(docs, "hub") - Z2JH_HUB_RULES == (calls["hub"] | calls["migrator"]) - Z2JH_HUB_RULES


def test_resize_rule_can_be_left_out(tools: dict[str, str]) -> None:
    docs = render(tools, sets=("rbac.resize=false",))
    assert not any(r == "pods/resize" for _, r, _ in granted(docs, "elastic-spawner-migrator"))
    assert not render(tools, sets=("rbac.create=false",)) or not of_kind(
        render(tools, sets=("rbac.create=false",)), "Role")


# ---- credentials ------------------------------------------------------------------------------

SECRET_ENV = re.compile(r"^(ELASTIC_S3_(ACCESS_KEY|SECRET_KEY|SESSION_TOKEN|ENDPOINT|REGION)|"
                        r"ELASTIC_CHECKPOINT_KEY|ELASTIC_HUB_SECRET|JUPYTERHUB_API_TOKEN)$")


def test_credentials_only_in_the_secret_and_by_reference(tools: dict[str, str]) -> None:
    values = yaml.safe_load((CI_VALUES / "all-optional-values.yaml").read_text())
    secrets = [values["s3"][k] for k in ("accessKey", "secretKey", "sessionToken")]
    secrets.append(values["checkpointSigning"]["hubSecret"])
    docs = render(tools, CI_VALUES / "all-optional-values.yaml")
    secret = named(docs, "Secret", "elastic-s3")
    assert secret["stringData"]["access-key"] == values["s3"]["accessKey"]
    signing = named(docs, "Secret", "elastic-signing")
    assert signing["stringData"] == {"hub-secret": values["checkpointSigning"]["hubSecret"]}
    assert signing["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for d in docs:
        if d["kind"] == "Secret":
            continue
        text = yaml.safe_dump(d)
        for s in secrets:
            assert s not in text, f"credential in plain text in {d['kind']}/{d['metadata']['name']}"
    for d in of_kind(docs, "Deployment") + of_kind(docs, "Job"):
        for c in containers(d):
            for env in c.get("env", []):
                if SECRET_ENV.match(env["name"]):
                    assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), env


def test_migrator_reads_its_token_from_the_z2jh_hub_secret(tools: dict[str, str]) -> None:
    docs = render(tools)
    dep = named(docs, "Deployment", "elastic-spawner-migrator")
    env = {e["name"]: e for e in containers(dep)[0]["env"]}
    ref = env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "hub", "key": "hub.services.elastic.apiToken"}
    for name in ("ELASTIC_S3_ACCESS_KEY", "ELASTIC_S3_SECRET_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "elastic-spawner-s3"
    # the hub secret is the hub's alone: the migrator never gets it (nor a checkpoint key)
    assert "ELASTIC_HUB_SECRET" not in env and "ELASTIC_CHECKPOINT_KEY" not in env


def test_existing_secret_replaces_the_chart_secret(tools: dict[str, str]) -> None:
    docs = render(tools, sets=("s3.existingSecret=corp-s3", "devStore.enabled=true",
                               "checkpointSigning.existingSecret=corp-signing"))
    assert not of_kind(docs, "Secret")
    refs = {e["valueFrom"]["secretKeyRef"]["name"]
            for d in of_kind(docs, "Deployment") + of_kind(docs, "Job")
            for c in containers(d) for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {}) and e["name"] != "JUPYTERHUB_API_TOKEN"}
    assert refs == {"corp-s3"}


def test_secret_keys_are_the_spawners_defaults(tools: dict[str, str]) -> None:
    """The chart's Secret keys are ElasticKubeSpawner.store_secret_keys' defaults."""
    kube = (ROOT / "elastic_spawner" / "kube.py").read_text()
    m = re.search(r"DEFAULT_SECRET_KEYS\s*=\s*(\{.*?\})", kube, re.S)
    assert m, "DEFAULT_SECRET_KEYS not found in elastic_spawner/kube.py"
    defaults = yaml.safe_load(m.group(1))
    docs = render(tools, sets=("s3.region=eu-1", "s3.sessionToken=t", "s3.accessKey=a"))
    secret = named(docs, "Secret", "elastic-spawner-s3")
    assert set(secret["stringData"]) == set(defaults.values())
    dep = named(docs, "Deployment", "elastic-spawner-migrator")
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in containers(dep)[0]["env"]
           if "secretKeyRef" in e.get("valueFrom", {}) and e["name"] != "JUPYTERHUB_API_TOKEN"}
    assert env == defaults


# ---- defaults, options, schema ------------------------------------------------------------------

def test_dev_store_is_off_by_default(tools: dict[str, str]) -> None:
    docs = render(tools)
    components = {d["metadata"]["labels"].get("app.kubernetes.io/component") for d in docs}
    assert "store" not in components and "store-bucket" not in components
    secret = named(docs, "Secret", "elastic-spawner-s3")
    assert secret["stringData"]["endpoint"] == ""  # AWS S3 unless configured
    assert not of_kind(docs, "NetworkPolicy") or all(
        "store-egress" not in d["metadata"]["name"] for d in of_kind(docs, "NetworkPolicy"))


def test_dev_store_when_enabled(tools: dict[str, str]) -> None:
    docs = render(tools, sets=("devStore.enabled=true",))
    store = named(docs, "Deployment", "elastic-spawner-store")
    c = containers(store)[0]
    assert c["image"] == "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"
    assert {e["name"] for e in c["env"]} == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
    secret = named(docs, "Secret", "elastic-spawner-s3")
    assert secret["stringData"]["endpoint"] == "http://elastic-spawner-store:9000"
    assert len(secret["stringData"]["secret-key"]) == 40  # generated
    job = named(docs, "Job", "elastic-spawner-store-bucket")
    assert "post-install" in job["metadata"]["annotations"]["helm.sh/hook"]
    netpol = named(docs, "NetworkPolicy", "elastic-spawner-singleuser-store-egress")
    assert netpol["spec"]["podSelector"] == {"matchLabels": {"component": "singleuser-server"}}
    assert netpol["spec"]["policyTypes"] == ["Egress"]
    assert netpol["spec"]["egress"][0]["ports"] == [{"port": 9000, "protocol": "TCP"}]
    # any S3 server: image and credential variable names are configurable
    docs = render(tools, sets=("devStore.enabled=true", "devStore.image.name=example/s3",
                               "devStore.image.tag=1.2", "devStore.accessKeyEnv=AK",
                               "devStore.secretKeyEnv=SK"))
    c = containers(named(docs, "Deployment", "elastic-spawner-store"))[0]
    assert c["image"] == "example/s3:1.2" and {e["name"] for e in c["env"]} == {"AK", "SK"}


def test_migrator_pod_may_reach_hub_and_servers(tools: dict[str, str]) -> None:
    docs = render(tools)
    dep = named(docs, "Deployment", "elastic-spawner-migrator")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["hub.jupyter.org/network-access-hub"] == "true"
    assert labels["hub.jupyter.org/network-access-singleuser"] == "true"
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "elastic-spawner-migrator"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    svc = named(docs, "Service", "elastic-spawner-migrator")
    assert svc["spec"]["ports"][0]["port"] == 10101
    c = containers(dep)[0]
    assert c["command"] == ["python3", "-m", "elastic_spawner.service"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/services/elastic/health"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/services/elastic/"
    assert env["ELASTIC_STORE_URL"] == "s3://elastic-checkpoints/{username}/{servername}"
    assert env["ELASTIC_STATE_DIR"] == "/var/lib/elastic-spawner"
    assert env["ELASTIC_PROXY_URL"] == "http://proxy-public"


def test_hub_secret_is_generated_once_and_only_for_the_hub(tools: dict[str, str]) -> None:
    docs = render(tools)
    signing = named(docs, "Secret", "elastic-spawner-signing")
    assert len(signing["stringData"]["hub-secret"]) == 64
    for d in of_kind(docs, "Deployment") + of_kind(docs, "Job"):
        for c in containers(d):
            assert not any(e["name"] == "ELASTIC_HUB_SECRET" for e in c.get("env", []))
    docs = render(tools, sets=("checkpointSigning.enabled=false",))
    assert [d["metadata"]["name"] for d in of_kind(docs, "Secret")] == ["elastic-spawner-s3"]


@pytest.mark.parametrize("bad", [
    "unknownTopLevel=1",
    "s3.bucketName=x",
    "devStore.imageName=x",
    "migrator.mode=sidecar",
    "devStore.image.tag=latest",
    "s3.bucket=Not_A_Bucket",
    "migrator.port=0",
])
def test_schema_rejects_bad_values(tools: dict[str, str], bad: str) -> None:
    proc = helm(tools, "template", "x", str(CHART), "--set", bad, check=False)
    assert proc.returncode != 0 and "schema" in proc.stderr.lower(), (bad, proc.stderr)


def test_every_value_is_documented() -> None:
    """Each key in values.yaml has a comment right above it (or is inside a Kubernetes object)."""
    passthrough = ("resources", "podSecurityContext", "containerSecurityContext",
                   "singleuserPodLabels", "affinity")
    missing = []
    stack: list[tuple[int, str]] = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = [k for _, k in stack]
        stack.append((indent, key))
        if any(p in passthrough for p in parents):
            continue
        prev = lines[i - 1].strip() if i else ""
        if not prev.startswith("#"):
            missing.append(".".join([*parents, key]))
    assert not missing, f"values without a comment: {missing}"


def test_z2jh_values_file_matches_the_chart(tools: dict[str, str], tmp_path: Path) -> None:
    """helm/z2jh-values.yaml is what NOTES.txt prints for release "elastic-spawner"."""
    chart = tmp_path / "elastic-spawner"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "z2jh-snippet.yaml").write_text(
        '{{ include "elastic-spawner.z2jhValues" . }}\n')
    out = helm(tools, "template", "elastic-spawner", str(chart), "--namespace", NAMESPACE,
               "--show-only", "templates/z2jh-snippet.yaml").stdout
    rendered = yaml.safe_load(out)
    static = yaml.safe_load((ROOT / "helm" / "z2jh-values.yaml").read_text())
    assert static == rendered
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert 'include "elastic-spawner.z2jhValues"' in notes


def test_z2jh_values_name_what_the_code_defines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scopes, service name, env names and traits in z2jh-values.yaml are the code's."""
    service = pytest.importorskip("elastic_spawner.service")
    from elastic_spawner.kube import ElasticKubeSpawner
    from elastic_spawner.mixin import ENV_HUB_SECRET

    static = yaml.safe_load((ROOT / "helm" / "z2jh-values.yaml").read_text())
    hub = static["hub"]
    assert hub["config"]["JupyterHub"]["custom_scopes"] == service.CUSTOM_SCOPES
    assert hub["services"]["elastic"]["oauth_client_allowed_scopes"] == [
        service.MIGRATE_SCOPE, service.READ_SCOPE]
    assert ENV_HUB_SECRET in hub["extraEnv"]
    traits = ElasticKubeSpawner.class_trait_names(config=True)
    assert set(hub["config"]["ElasticKubeSpawner"]) <= set(traits)
    # the service's default prefix is /services/<name>/ for the name the chart uses
    from elastic_spawner.service.app import ElasticService

    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    assert ElasticService().service_prefix == "/services/elastic/"


def test_e2e_is_not_collected_by_default() -> None:
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert cfg["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]


# ---- Dockerfiles --------------------------------------------------------------------------------

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK",
                "SHELL", "MAINTAINER"}
SECRET_WORDS = re.compile(r"(password|passwd|secret|token|access[_-]?key|api[_-]?key)\s*=",
                          re.I)


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, args = buf.partition(" ")
        out.append((word.upper(), args.strip()))
        if word.upper() != word:
            out.append(("LOWERCASE", word))
        buf = ""
    assert not buf, "dangling line continuation at the end"
    return out


def check_dockerfile(path: Path) -> list[str]:
    """Problems found in a Dockerfile (empty list: fine)."""
    problems = []
    steps = parse_dockerfile(path.read_text())
    args = {}
    for word, rest in steps:
        if word == "LOWERCASE":
            problems.append(f"instruction not upper case: {rest}")
        elif word not in INSTRUCTIONS:
            problems.append(f"unknown instruction {word}")
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k.strip()] = v.strip()
        if word in ("ENV", "ARG", "LABEL", "RUN") and SECRET_WORDS.search(rest):
            problems.append(f"looks like a secret in {word} {rest[:60]}")
        if word == "ADD" and "://" in rest:
            problems.append("ADD of a URL (use a pinned, checked download)")
    froms = [rest for word, rest in steps if word == "FROM"]
    if not froms:
        problems.append("no FROM")
    leading = [w for w, _ in steps[: next((i for i, (w, _) in enumerate(steps) if w == "FROM"), 0)]]
    if set(leading) - {"ARG"}:
        problems.append(f"only ARG may precede FROM, found {leading}")
    for ref in froms:
        image = ref.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        if "@sha256:" in image:
            continue
        if not tag or tag == "latest" or "${" in image:
            problems.append(f"FROM {ref}: pin a tag (not latest)")
    if not any(w == "RUN" and re.search(r"pip install[^&;]*/tmp/elastic-spawner", r)
               for w, r in steps):
        problems.append("no `pip install` of this package (the copied checkout)")
    copied = " ".join(r for w, r in steps if w == "COPY")
    for needed in ("pyproject.toml", "elastic_spawner", "kernel_agent", "jupyter-config"):
        if needed not in copied:
            problems.append(f"COPY of {needed} missing (the package would be incomplete)")
    users = [r for w, r in steps if w == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("the image ends as root")
    return problems


@pytest.mark.parametrize("name", ["Dockerfile.hub", "Dockerfile.singleuser"])
def test_dockerfile_is_sound(name: str) -> None:
    assert check_dockerfile(ROOT / "images" / name) == []


def test_dockerfile_bases() -> None:
    hub = (ROOT / "images" / "Dockerfile.hub").read_text()
    assert re.search(r"quay\.io/jupyterhub/k8s-hub:4\.\d+\.\d+", hub), "hub base: z2jh 4.x"
    single = (ROOT / "images" / "Dockerfile.singleuser").read_text()
    assert re.search(r"quay\.io/jupyter/(base|scipy)-notebook:", single)
    assert "jupyter server extension list" in single  # the build fails unless it is enabled


@pytest.mark.parametrize("bad, problem", [
    ("FROM python\nRUN pip install /tmp/elastic-spawner\n", "pin a tag"),
    ("FROM python:latest\n", "pin a tag"),
    ("ARG X=1\nENV API_TOKEN=abc\nFROM python:3.12\n", "only ARG may precede FROM"),
    ("FROM python:3.12\nENV AWS_SECRET=x PASSWORD=hunter2\n", "looks like a secret"),
    ("FROM python:3.12\nfrobnicate x\n", "unknown instruction"),
    ("FROM python:3.12\nRUN pip install numpy\nUSER 1000\n", "no `pip install` of this package"),
    ("FROM python:3.12\nUSER root\n", "ends as root"),
])
def test_dockerfile_checker_catches(tmp_path: Path, bad: str, problem: str) -> None:
    f = tmp_path / "Dockerfile"
    f.write_text(bad)
    assert any(problem in p for p in check_dockerfile(f)), check_dockerfile(f)
