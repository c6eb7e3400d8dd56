"""A server with a kernel that cannot be checkpointed still checkpoints the others.

A second kernel spec can run ipykernel from a Python without kernel_agent (a conda env the user
registered): the extension injects the agent argument, IPython cannot load it, and the kernel
runs unmonitored. A server checkpoint must save the other kernels, report this one with a
message that says what to do, and the restore must give its notebook a fresh kernel (``skipped``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.server.conftest import Server

# ipykernel from the same interpreter, but `import kernel_agent` fails in it
NO_AGENT = ("import sys; sys.modules['kernel_agent'] = None; "
            "from ipykernel import kernelapp; kernelapp.launch_new_instance()")


def _no_agent_spec(root: Path) -> Path:
    spec = root / "kernels" / "no-agent"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-c", NO_AGENT, "-f", "{connection_file}"],
        "display_name": "Python (no agent)", "language": "python",
    }))
    return root


def test_kernel_without_the_agent_is_reported_and_the_others_are_saved(
    start_server, store_url: str, tmp_path: Path
) -> None:
    s: Server = start_server(env={"ELASTIC_STORE_URL": store_url,
                                  "JUPYTER_PATH": str(_no_agent_spec(tmp_path / "jupyter-path"))})
    good = s.create_session("good.ipynb")["kernel"]["id"]
    s.create_session("other env.ipynb", kernel_name="no-agent")
    with s.attach(good) as k:
        k.ok("x = 7")

    r = s.post("api/elastic/checkpoint", json={"busy_timeout": 5})

    assert r.status_code == 200, r.text
    body = r.json()
    reports = {k["path"]: k for k in body["kernels"]}
    assert body["complete"] is False
    assert reports["good.ipynb"]["status"] == "ok"
    assert reports["other env.ipynb"]["status"] == "failed"
    assert reports["other env.ipynb"]["kernel_name"] == "no-agent"
    assert reports["other env.ipynb"]["error"].startswith(
        "this kernel cannot import kernel_agent: its kernel spec runs a Python without "
        "elastic-spawner installed"), reports["other env.ipynb"]

    for session in s.sessions().values():
        assert s.request("DELETE", f"api/sessions/{session['id']}").status_code == 204
    r = s.post("api/elastic/restore", json={"checkpoint": body["checkpoint"]})
    assert r.status_code == 202, r.text
    st = s.wait_restore()["restore"]
    outcome = {k["path"]: k["status"] for k in st["kernels"]}
    assert outcome == {"good.ipynb": "ok", "other env.ipynb": "skipped"}, json.dumps(st, indent=1)
    sessions = s.sessions()
    assert sessions["other env.ipynb"]["kernel"]["name"] == "no-agent"
    with s.attach(sessions["good.ipynb"]["kernel"]["id"]) as k:
        assert k.value("x") == 7
