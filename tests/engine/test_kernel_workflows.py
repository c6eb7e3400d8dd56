"""How people drive a Jupyter kernel around checkpoints: prompts answered through the
frontend (``input()``), the shell's own settings and magics, the agent's own magics and calls
inside recorded cells, and a restore interrupted halfway.

Each scenario runs in a real kernel A, is checkpointed and restored into fresh kernels (the
optimal plan, and where it matters a replay plan, ``deadline_s=0.0``): every variable must
come back verified and equal, or be named in `lost` with the right reason, and a restore never
prompts the user nor leaves half of itself behind.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path

from tests.engine.adversarial import PLANS
from tests.kernels import Kernel


def run_answering(k: Kernel, code: str, answer: str, allow_stdin: bool = True,
                  timeout: float = 120) -> tuple[str, list[str]]:
    """Run `code` as a notebook frontend that answers every input prompt with `answer`
    (jupyter_client's stdin channel); the reply's status and the prompts the kernel sent."""
    msg_id = k.kc.execute(code, allow_stdin=allow_stdin)
    prompts: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            msg = k.kc.get_stdin_msg(timeout=0.1)
        except queue.Empty:
            pass
        else:
            if msg["msg_type"] == "input_request":
                prompts.append(msg["content"]["prompt"])
                k.kc.input(answer)
        try:
            reply = k.kc.get_shell_msg(timeout=0.1)
        except queue.Empty:
            continue
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]["status"], prompts
    raise TimeoutError(f"no reply in {timeout}s to {code!r}")


def _restore_answering(make_kernel, url: str) -> tuple[Kernel, list[str], dict]:
    """Restore `url` into a fresh kernel from a frontend that allows stdin and answers any
    prompt: the kernel, the prompts the restore sent, the restore's summary."""
    b = make_kernel()
    status, prompts = run_answering(
        b, f"import kernel_agent as _ka; _r = _ka.restore({url!r})", answer="someone else")
    assert status == "ok"
    return b, prompts, b.value("_r")


# --- input() answered through the frontend ---------------------------------------------------

def test_a_name_typed_at_an_input_prompt_is_shipped_not_asked_for_again(make_kernel, tmp_path):
    """`name = input('who? ')` took a few milliseconds when the answer came from a client, so
    the planner re-ran the cell at restore: the restore prompted the user in the middle of
    restoring, and the value made from the new answer was reported as differing (blamed on the
    hash seed). A cell that asked for input is not re-run: its value is shipped, or named as
    lost with the reason when nothing may be shipped."""
    a = make_kernel()
    assert run_answering(a, "name = input('who? ')", "alice") == ("ok", ["who? "])
    a.ok("greeting = 'hi ' + name")
    for plan, kw in PLANS.items():
        url = (tmp_path / plan).as_uri()
        a.ok(f"import kernel_agent as _ka; _c = _ka.checkpoint({url!r}{kw})")
        b, prompts, r = _restore_answering(make_kernel, url)
        assert prompts == [], f"{plan} plan: the restore asked the user again"
        if plan == "optimal":
            assert r["verified"], r["variables"]
            assert b.value("[name, greeting]") == ["alice", "hi alice"]
        else:
            assert "asks the user for input" in r["lost"]["name"]
            assert "name" in r["lost"]["greeting"]
            assert r["mismatched"] == []


def test_a_cell_that_found_no_stdin_is_not_prompted_for_at_restore(make_kernel, tmp_path):
    """A cell run by a frontend that allows no stdin (nbclient, papermill) and falls back to a
    default when `input()` raises: re-run by a restore that a notebook called (stdin allowed),
    the same cell prompted the user and took the answer instead of the default. A restore's
    re-runs never ask for input."""
    a = make_kernel()
    status, prompts = run_answering(
        a, "try:\n    who = input('who? ')\nexcept Exception:\n    who = 'nobody'", "alice",
        allow_stdin=False)
    assert (status, prompts) == ("ok", [])
    a.ok("tag = who.upper()")
    url = (tmp_path / "replay").as_uri()
    a.ok(f"import kernel_agent as _ka; _c = _ka.checkpoint({url!r}, deadline_s=0.0)")
    b, prompts, r = _restore_answering(make_kernel, url)
    assert prompts == []
    assert r["verified"], r["variables"]
    assert b.value("[who, tag]") == ["nobody", "NOBODY"]


# --- the shell's own settings ----------------------------------------------------------------

SHELL_SETTINGS = ("[get_ipython().call_pdb, get_ipython().display_formatter.formatters"
                  "['text/plain'].float_precision, get_ipython().InteractiveTB.mode]")


def test_shell_settings_made_after_the_first_variables_come_back(make_kernel, tmp_path):
    """`%pdb on` and `%precision 3` are magics the analysis takes for reading the whole
    namespace: typed once the notebook had variables, the restore no longer re-ran them as
    setting cells (they "read" values the replay had not loaded at their position), and the
    restored session silently had no post-mortem debugger and printed floats in full."""
    for plan, kw in PLANS.items():
        a = make_kernel()
        for cell in ["x = [1.5]", "%pdb on", "%precision 3", "%xmode Minimal", "y = x + [2.25]"]:
            a.ok(cell)
        want = a.value(SHELL_SETTINGS)
        assert want == [True, "3", "Minimal"]
        url = (tmp_path / plan).as_uri()
        a.ok(f"import kernel_agent as _ka; _c = _ka.checkpoint({url!r}{kw})")
        b = make_kernel()
        b.ok(f"import kernel_agent as _ka; _r = _ka.restore({url!r})")
        assert b.value("_r['verified']")
        assert b.value(SHELL_SETTINGS) == want, f"{plan} plan"
        assert b.value("[x, y]") == [[1.5], [1.5, 2.25]]


def test_a_magic_a_cell_registered_is_there_after_the_restore(make_kernel, tmp_path):
    """`@register_line_magic` binds the function and registers the magic: the optimal plan
    shipped the function and did not re-run the cell, so `%shout` was not found after the
    restore, with nothing said. A cell that registers a magic (or an alias) changes the
    shell's state, which only its re-run brings back."""
    a = make_kernel()
    for cell in ["words = ['hi']",
                 "from IPython.core.magic import register_line_magic\n"
                 "@register_line_magic\ndef shout(line):\n    return line.upper() + '!'",
                 "%alias say echo %s",
                 "n = len(words)"]:
        a.ok(cell)
    url = (tmp_path / "ship-all").as_uri()
    # (shipping the function, as the optimal plan does when it finds that cheaper)
    a.ok(f"import kernel_agent as _ka; _c = _ka.checkpoint({url!r}, strategy='ship-all')")
    b = make_kernel()
    b.ok(f"import kernel_agent as _ka; _r = _ka.restore({url!r})")
    assert b.value("_r['verified']")
    assert b.value("[n, get_ipython().run_line_magic('shout', 'again')]") == [1, "AGAIN!"]
    assert b.value("get_ipython().alias_manager.is_alias('say')")


# --- the agent's own magics ------------------------------------------------------------------

def test_the_restore_magic_restores_a_session(make_kernel, tmp_path):
    """`%restore URL` passed the checkpoint id positionally to `kernel_agent.restore`, which
    takes it by keyword only: the magic failed with a TypeError every time."""
    a = make_kernel()
    for cell in ["xs = [1, 2]", "ys = xs", "xs.append(3)"]:
        a.ok(cell)
    url = (tmp_path / "s").as_uri()
    assert "checkpoint " in a.ok(f"%checkpoint {url}").stdout
    b = make_kernel()
    assert "verified equal" in b.ok(f"%restore {url}").stdout
    assert b.value("[xs, ys is xs]") == [[1, 2, 3], True]


def test_checkpoint_and_restore_magic_cells_re_run_by_a_later_restore_are_no_errors(
        make_kernel, tmp_path):
    """A `%checkpoint` or `%restore` cell is a magic that changes no variable: a restore
    re-runs it as a setting cell, where the agent's call returns "skipped" (no checkpoint or
    restore inside a restore), and the magic then failed on the missing summary keys: an
    error in every later restore's report."""
    a = make_kernel()
    u1, u2, u3 = [(tmp_path / f"s{i}").as_uri() for i in (1, 2, 3)]
    a.ok("x = [1]")
    a.ok(f"%checkpoint {u1}")
    a.ok("x.append(2)")
    a.ok(f"import kernel_agent as _ka; _c = _ka.checkpoint({u2!r}, deadline_s=0.0)")
    b = make_kernel()
    b.ok(f"%restore {u2}")
    b.ok("x.append(3)")
    b.ok(f"import kernel_agent as _ka; _c = _ka.checkpoint({u3!r}, deadline_s=0.0)")
    c = make_kernel()
    c.ok(f"import kernel_agent as _ka; _r = _ka.restore({u3!r})")
    r = c.value("_r")
    assert r["errors"] == [] and r["verified"], r
    assert c.value("x") == [1, 2, 3]


def test_a_summary_the_agent_returned_into_a_variable_is_never_blamed_on_the_hash_seed(
        make_kernel, tmp_path):
    """`ck = kernel_agent.checkpoint(url)`, `summary = kernel_agent.restore(url)`: re-run by a
    later restore, those calls return a "skipped" note (no checkpoint or restore inside a
    restore), so the replay plan's recomputed `ck` and `summary` were other dicts, reported as
    "recomputed" but differing, blamed on the hash seed. A cell that restored is not re-run
    (`summary` is shipped, or lost with that reason); one that checkpointed is re-run only
    when it must be, and its differing summary is then put down to that call."""
    u1, u2, u3, u4 = [(tmp_path / f"s{i}").as_uri() for i in (1, 2, 3, 4)]
    a = make_kernel()
    a.ok("x = [1]")
    a.ok(f"import kernel_agent\nck = kernel_agent.checkpoint({u1!r})")
    a.ok("x.append(2)")
    a.ok(f"kernel_agent.checkpoint({u2!r})")
    b = make_kernel()
    b.ok(f"import kernel_agent\nsummary = kernel_agent.restore({u2!r})")
    b.ok("y = len(x)")
    b.ok(f"_c = kernel_agent.checkpoint({u3!r})")
    c = make_kernel()
    c.ok(f"import kernel_agent as _ka; _r = _ka.restore({u3!r})")
    r = c.value("_r")
    assert r["verified"], r["variables"]
    assert c.value("[x, y, ck['checkpoint_id'], sorted(summary)]") == [
        [1, 2], 2, b.value("ck['checkpoint_id']"), b.value("sorted(summary)")]

    b.ok(f"_c = kernel_agent.checkpoint({u4!r}, deadline_s=0.0)")
    d = make_kernel()
    d.ok(f"import kernel_agent as _ka; _r = _ka.restore({u4!r})")
    r = d.value("_r")
    assert "calls kernel_agent.restore()" in r["lost"]["summary"]
    assert "calls kernel_agent.checkpoint()" in (r["lost"].get("ck")
                                                 or r["variables"]["ck"]["detail"])
    assert "hash" not in r["variables"]["ck"].get("detail", "")
    assert d.value("[x, y]") == [[1, 2], 2]


# --- a restore that does not finish ----------------------------------------------------------

def run_interrupted_while_open(k: Kernel, code: str, path: Path, timeout: float = 120) -> dict:
    """Run `code` and interrupt the kernel once its process holds `path` open (a re-run cell
    reading it; a restore's re-runs show no output to wait for); the error it shows."""
    msg_id = k.kc.execute(code)
    fds = Path(f"/proc/{k.km.provisioner.pid}/fd")
    end = time.monotonic() + timeout
    while not any(_points_at(fd, path) for fd in fds.iterdir()):
        assert time.monotonic() < end, f"{path} never opened"
    k.km.interrupt_kernel()
    error = None
    while True:
        msg = k.kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            error = msg["content"]
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    assert error is not None
    return error


def _points_at(fd: Path, path: Path) -> bool:
    try:
        return fd.readlink() == path
    except OSError:  # (closed meanwhile)
        return False


def test_an_interrupted_restore_leaves_no_half_made_values(make_kernel, tmp_path):
    """The stop button while a restore re-ran a loop: the list it was filling stayed in the
    kernel half filled, with no history; the next checkpoint shipped it as the session's, and
    the restore after that verified it. An unfinished restore puts the namespace back as it
    was: nothing of it is left to be taken for the session."""
    data = tmp_path / "lines.txt"
    data.write_text("".join(f"{i}\n" for i in range(300)))
    a = make_kernel()
    a.ok("import time\nx = [-1]")
    a.ok("with open('lines.txt') as f:\n    for line in f:\n        x.append(int(line))\n"
         "        time.sleep(0.01)")
    a.ok("n = len(x)")
    u1, u2 = (tmp_path / "s1").as_uri(), (tmp_path / "s2").as_uri()
    a.ok(f"import kernel_agent as _ka; _c = _ka.checkpoint({u1!r}, deadline_s=0.0)")
    assert a.value("_c['variables']['x']") == "recompute"
    b = make_kernel()
    error = run_interrupted_while_open(
        b, f"import kernel_agent as _ka; _r = _ka.restore({u1!r})", data)
    assert error["ename"] == "KeyboardInterrupt"
    assert b.value("[n in globals() for n in ('x', 'n', 'line', 'f')]") == [False] * 4
    b.ok("z = 1")
    b.ok(f"_c = _ka.checkpoint({u2!r})")
    assert sorted(b.value("_c['variables']")) == ["z"]
    # and the restore, run again, restores the session
    c = make_kernel()
    c.ok(f"import kernel_agent as _ka; _r = _ka.restore({u1!r})")
    assert c.value("_r['verified']") and c.value("[len(x), n]") == [301, 301]
