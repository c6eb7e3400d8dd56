"""Notebooks built around iterators, concurrency and OS resources, migrated and used on.

Partly consumed iterators that share state (`tee` pairs, `groupby` and its current group), and
handles of OS resources (child processes). After a restore each must go on as it would have in
the checkpointed kernel, or be named in `lost` with a reason: never a handle that answers for
something it no longer is.
"""

from __future__ import annotations

import pytest

from tests.engine.migrate import assert_verified, run_and_migrate

STRATEGIES = ["optimal", "ship-all"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_running_child_process_is_lost_not_verified_as_exited(make_kernel, tmp_path, strategy):
    """A `Popen` whose child was still running was pickled as an object and verified: in the
    new kernel `poll()` found no child of its own and answered 0 (exited, success) for a
    process still running on the old node, and `kill()` would have signalled whatever process
    has its pid there. It cannot be carried: it is lost, by name, with why."""
    cells = ["import subprocess, sys\n"
             "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])",
             "label = 'long job'"]
    a, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    try:
        v = r["variables"]["p"]
        assert not v.get("verified") and v["action"] == "lost", v
        assert "p" in r["lost"] and "not waited for" in v["detail"], v
        assert b.value("'p' in globals()") is False
        assert r["variables"]["label"]["verified"] and b.value("label") == "long job"
    finally:
        a.ok("p.kill(); p.wait()")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_child_process_waited_for_keeps_its_exit_status_and_output(make_kernel, tmp_path,
                                                                     strategy):
    """The other side of the rule above: a `Popen` whose child was waited for holds only its
    answers (a failing exit status, what it printed) and still ships, verified."""
    cells = ["import subprocess, sys\n"
             "p = subprocess.Popen([sys.executable, '-c', 'print(42); raise SystemExit(3)'],\n"
             "                     stdout=subprocess.PIPE, text=True)\n"
             "out, _ = p.communicate()"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_verified(r)
    assert b.value("[p.poll(), p.returncode, out, p.wait()]") == [3, 3, "42\n", 3]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_tee_pair_stays_in_step_over_the_notebooks_list(make_kernel, tmp_path, strategy):
    """The two iterators of `tee` share one buffer and one iterator over `data`: after the
    restore the lagging one still yields what the leading one buffered, and both see an item
    appended to `data` after the checkpoint."""
    cells = ["import itertools\ndata = [1, 2, 3, 4, 5]\nlead, lag = itertools.tee(data)\n"
             "next(lead); next(lead)",
             "data.append(6)"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_verified(r)
    b.ok("data.append(7)")
    assert b.value("[next(lag), next(lead), list(lead), list(lag)]") == [
        1, 3, [4, 5, 6, 7], [2, 3, 4, 5, 6, 7]]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_groupby_and_its_current_group_stay_one(make_kernel, tmp_path, strategy):
    """A group iterator is valid only while its `groupby` has not moved on: restored apart, it
    would still yield its items after `next(gb)`, where the notebook's yields nothing."""
    cells = ["import itertools\nrows = ['aa', 'ab', 'ba', 'bb', 'ca']\n"
             "gb = itertools.groupby(rows, key=lambda s: s[0])\nkey, grp = next(gb)\nnext(grp)"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_verified(r)
    assert b.value("[key, next(gb)[0], list(grp), [k for k, _ in gb]]") == ["a", "b", [], ["c"]]


def test_a_signal_handler_the_notebook_installed_is_installed_again(make_kernel, tmp_path):
    """`signal.signal(SIGUSR1, on_usr1)` binds only the old handler: shipped with the cell's
    variables, the new kernel kept the default handler (the next SIGUSR1 killed it) while
    every variable verified. The cell that installed it is re-run, so the handler is installed
    and appends to the notebook's `log` (a global it looks up when called). (The installed
    handler is the re-run's function, not the shipped `on_usr1`: identity is not kept.)"""
    cells = ["import os, signal\nlog = []\ndef on_usr1(sig, frame):\n    log.append('usr1')\n"
             "previous = signal.signal(signal.SIGUSR1, on_usr1)",
             "log.append('started')"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells, strategy="ship-all")
    assert_verified(r)
    assert b.value("signal.getsignal(signal.SIGUSR1).__name__") == "on_usr1"
    b.ok("os.kill(os.getpid(), signal.SIGUSR1)")
    assert b.value("log") == ["started", "usr1"]
