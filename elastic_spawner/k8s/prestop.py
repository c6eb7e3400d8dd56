"""The preStop hook: a deadline-aware checkpoint asked of the server extension inside the pod.

Built in the hub (ElasticKubeSpawner puts it into the pod manifest); the *script* runs inside the
single-user container, in the kubelet's preStop exec, before SIGTERM (on SIGTERM jupyter_server
shuts every kernel down, so the checkpoint must be done by then). It covers every graceful
termination the hub did not start: eviction after a PDB was released, graceful node shutdown,
spot notices, `kubectl delete pod`.

Python rather than curl: every single-user image has Python, not every one has curl. The script
uses only the standard library and the container's own environment:

- `JUPYTERHUB_API_TOKEN` (the server's token: `access:servers!server`, which is what the
  `api/elastic/*` endpoints require), `JUPYTERHUB_SERVICE_PREFIX` (the base URL);
- `ELASTIC_SERVER_PORT` (set by ElasticKubeSpawner to the server's port).

Hub-initiated stops have checkpointed already (the mixin, before KubeSpawner's 1 s delete). The
hook must then not start a second checkpoint that the 1 s grace would kill halfway. It returns
at once when the server's last checkpoint (`GET api/elastic/status`, the id is its commit time)
is newer than the last activity of every kernel (`GET api/kernels`, `last_activity` moves with
every message a kernel sends) and no kernel is busy: nothing ran since, so there is nothing to
add. A marker written by the hub would need a channel into the pod the hub does not have; this
test reads what the server itself knows. `FRESH_SLACK` (1 s) absorbs the kernel's final
"idle" status message, which can reach the server just after the commit.

Exit status: 0 when checkpointed or nothing to do; 1 when the checkpoint failed (the kubelet
then records a FailedPreStopHook event; the pod terminates either way).
"""

from __future__ import annotations

from typing import Any

FRESH_SLACK = 1.0

# Arguments: grace period, safety margin, busy timeout (seconds). Keep it free of "$(": the
# kubelet of some runtimes (and the test rig) expands $(VAR) references in exec commands.
PRESTOP_SCRIPT = r'''
import json, os, sys, time, urllib.request
from datetime import datetime, timedelta, timezone
t0 = time.monotonic()
grace, margin, busy = (float(a) for a in sys.argv[1:4])
base = "http://127.0.0.1:%s%s" % (os.environ.get("ELASTIC_SERVER_PORT", "8888"),
                                  os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"))
headers = {"Authorization": "token " + os.environ.get("JUPYTERHUB_API_TOKEN", ""),
           "Content-Type": "application/json"}
def say(msg):
    print("elastic preStop: " + msg, flush=True)
def call(method, path, body=None, timeout=5.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=max(timeout, 0.5)) as r:
        return json.load(r)
def when(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
try:
    status = call("GET", "api/elastic/status")
    kernels = call("GET", "api/kernels")
except Exception as e:
    say("server does not answer (%s): nothing to checkpoint" % e)
    sys.exit(0)
if not kernels:
    say("no kernels: nothing to checkpoint")
    sys.exit(0)
if (status.get("restore") or {}).get("state") == "running":
    say("a restore is running; its checkpoint stays the one to restore")
    sys.exit(0)
last = status.get("last_checkpoint")
if last:
    cid = last.rpartition("#")[2]
    done = datetime.strptime(cid[:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)
    slack = timedelta(seconds=FRESH_SLACK)
    idle = all(k.get("execution_state") != "busy" for k in kernels)
    quiet = all(when(k["last_activity"]) <= done + slack for k in kernels if k.get("last_activity"))
    if idle and quiet:
        say("checkpoint %s is fresh (no kernel activity since): done" % last)
        sys.exit(0)
left = grace - margin - (time.monotonic() - t0)
if left < 1:
    say("no time left for a checkpoint (%.1fs)" % left)
    sys.exit(1)
try:
    res = call("POST", "api/elastic/checkpoint",
               {"deadline": left, "busy_timeout": min(busy, left / 2)}, timeout=left + margin / 2)
except Exception as e:
    say("checkpoint failed: %s" % e)
    sys.exit(1)
say("checkpoint %s complete=%s (%s variable(s) lost) in %.1fs" % (
    res.get("checkpoint"), res.get("complete"), res.get("lost_variables", "?"), time.monotonic() - t0))
sys.exit(0 if res.get("complete") else 1)
'''.replace("FRESH_SLACK", repr(FRESH_SLACK))


def make_prestop_handler(
    grace_period: int, *, margin: float = 5.0, busy_timeout: float = 5.0, python: str = "python3"
) -> dict[str, Any]:
    """The container `lifecycle.preStop` handler (an exec of `PRESTOP_SCRIPT`).

    The checkpoint deadline is `grace_period - margin - time already spent in the hook`: the
    planner then ships less and recomputes more so that the manifest is committed before the
    kubelet's SIGKILL; `margin` leaves time for SIGTERM and the commit itself.
    """
    if grace_period <= margin:
        raise ValueError(
            f"the grace period ({grace_period}s) must exceed the preStop margin ({margin}s)"
        )
    return {
        "exec": {
            "command": [python, "-c", PRESTOP_SCRIPT, str(grace_period), str(margin), str(busy_timeout)]
        }
    }
