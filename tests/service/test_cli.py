"""`elastic-spawner migrate` and `elastic-spawner checkpoints` against the running service.

The CLI runs as a user would run it: a subprocess with the service URL and a token in the
environment, nothing secret on the command line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import ElasticHub, token_for
from tests.service.test_migrate import expected, run_tiny_notebook, session_values

pytestmark = [pytest.mark.hub, pytest.mark.slow]


def cli_command() -> list[str]:
    exe = Path(sys.executable).with_name("elastic-spawner")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "elastic_spawner.cli"]


async def cli(eh: ElasticHub, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ELASTIC_SERVICE_URL=eh.service_url, ELASTIC_TOKEN=token,
               COLUMNS="200", TERM="dumb")
    env.pop("JUPYTERHUB_API_TOKEN", None)
    return await asyncio.to_thread(subprocess.run, [*cli_command(), *args], env=env,
                                   capture_output=True, text=True, timeout=600)


async def test_cli_migrates_lists_and_explains_errors(make_elastic_hub) -> None:
    eh: ElasticHub = await make_elastic_hub()
    server = await eh.user_server("alice", node="node-a")
    await run_tiny_notebook(server, "alice")
    ops = await token_for(eh, "ops")

    proc = await cli(eh, ops, "migrate", "alice", "--node", "node-b", "--reason", "cli test")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "VERIFIED" in out and "node node-a -> node-b" in out and "work.ipynb" in out, out
    assert ops not in out  # the token is never printed
    assert await session_values(eh, "alice", "", server.token) == expected("alice")

    proc = await cli(eh, ops, "checkpoints", "alice")
    assert proc.returncode == 0, proc.stderr
    assert "restores next" in proc.stdout and "work.ipynb" in proc.stdout, proc.stdout

    proc = await cli(eh, ops, "checkpoints", "alice", "--json")
    ckpt = __import__("json").loads(proc.stdout)["checkpoints"][0]
    proc = await cli(eh, ops, "checkpoints", "alice", "--delete", ckpt["id"])
    assert proc.returncode == 2 and "--force" in proc.stderr, proc.stderr  # it restores next

    proc = await cli(eh, ops, "migrate", "nobody")
    assert proc.returncode == 2 and "no user 'nobody'" in proc.stderr, proc.stderr
    proc = await cli(eh, ops, "migrate", "alice", "--memory", "lots")
    assert proc.returncode == 2 and "is not a size" in proc.stderr, proc.stderr
    bob = await token_for(eh, "bob")
    proc = await cli(eh, bob, "migrate", "alice")
    assert proc.returncode == 2 and "custom:elastic:migrate" in proc.stderr, proc.stderr
    proc = await cli(eh, "", "checkpoints", "alice")
    assert proc.returncode == 2 and "ELASTIC_TOKEN" in proc.stderr, proc.stderr
