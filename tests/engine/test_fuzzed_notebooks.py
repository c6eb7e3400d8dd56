"""Scenarios the notebook fuzzer (tests/engine/notebook_fuzz.py) found restored silently
different, each cut down to the cells that show it, migrated with both plans
(tests/engine/adversarial.py). A probe evaluated in kernel A after the checkpoint must give the
same answer in each restored kernel, or the restore must name what it could not bring back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.adversarial import assert_verified, migrate_both

ROOT = Path(__file__).resolve().parents[2]


def _seeded(make_kernel):
    """Kernels with one string-hash seed, as the server starts every kernel of a user."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return lambda: make_kernel(env=env)


def assert_same_or_named(make_kernel, tmp_path, cells: list[str], probe: str) -> None:
    """Run `cells`, migrate with both plans. The optimal plan verifies every variable and
    `probe` gives A's answer; the replay plan (which ships nothing it can avoid) does the
    same, or names each variable it did not bring back as lost, with a reason."""
    a, out = migrate_both(_seeded(make_kernel), tmp_path, cells)
    want = a.value(probe)
    assert_verified(out["optimal"])
    for r in out.values():
        if r.restore["verified"]:
            assert r.kernel.value(probe) == want, (r.plan, r.restore["variables"])
        else:
            assert all(v.get("verified") or v["action"] == "lost" and v.get("detail")
                       for v in r.restore["variables"].values()), (r.plan, r.restore["variables"])


def test_an_iterator_past_the_end_of_a_list_that_shrank_stays_past_it(make_kernel, tmp_path):
    """`it = iter(draws)` advanced twice, then `draws.clear()`: the iterator's position (2) is
    past the list's end, and once the list grows again `list(it)` starts at its third item.
    Shipped (the draws come from the OS: their cell cannot be re-run), the iterator was rebuilt
    by `list_iterator.__setstate__`, which clamps a position to the list's length: it came
    back at 0 and listed every item, verified (an iterator is checked by type). A reversed
    iterator was clamped the same way."""
    assert_same_or_named(make_kernel, tmp_path, [
        "import os\ndraws = list(os.urandom(3))",
        "it = iter(draws)\nnext(it); next(it)\nback = reversed(draws)\nnext(back)",
        "draws.clear()",
    ], "[draws.extend([10, 20, 30, 40]), list(it), list(back)][1:]")


def test_iterators_past_the_end_of_a_bytearray_and_an_array_that_shrank_stay_past_it(
        make_kernel, tmp_path):
    """The same clamping in the ``__setstate__`` of a bytearray's iterator, of `reversed` over
    one and of an ``array.array``'s iterator: advanced, then the buffer emptied and filled
    again, each came back at another position."""
    assert_same_or_named(make_kernel, tmp_path, [
        "import os, array\nbuf = bytearray(os.urandom(3))\nnums = array.array('i', os.urandom(12))",
        "bi = iter(buf)\nnext(bi); next(bi)\nbr = reversed(buf)\nnext(br)\nni = iter(nums)\nnext(ni); next(ni)",
        "del buf[:]\ndel nums[:]",
    ], "[buf.extend(b'WXYZ'), nums.extend([7, 8, 9, 10]), list(bi), list(br), list(ni)][2:]")


@pytest.mark.slow
def test_a_few_fuzzed_notebooks_restore_what_they_held_or_name_it(tmp_path):
    """Three fixed seeds of the fuzzer, optimal and ship-all plans, in forked shells (a
    subprocess: its shells fork from it, not from pytest). Seed 2000 holds a cycle over a
    list that a later cell emptied (the iterator bug above, seen through `itertools.cycle`);
    seed 5004 a registry filled from `__init__`, a redefined class and a half-failed cell;
    seed 1000049 (the extended grammar: closures, deques, partials, dataclasses...) a
    `zip_longest` that ran out of its shorter input (the crash above). A difference the
    restore did not report fails, with what differed."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "tests.engine.notebook_fuzz", "--seeds", "2000,5004,1000049",
         "--plans", "optimal,ship-all"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.stdout.count(": ok") == 3, run.stdout


def test_a_shipped_set_of_strings_iterates_in_the_order_it_did(make_kernel, tmp_path):
    """`{'ee', 'f', 'hh', 'c', 1, 2.5}` (a literal: made from a frozenset constant) iterates
    'c' before 'hh'. Shipped (its cell reads OS entropy), pickle added its items in that order
    to an empty set, whose table put 'hh' first: with the same string-hash seed `list(words)`
    differed, and the set verified (a set's digest has no order). Its table is now rebuilt."""
    assert_same_or_named(make_kernel, tmp_path, [
        "import os\nsalt = os.urandom(2)\nwords = {'ee', 'f', 'hh', 'c', 1, 2.5}",
        "same = [words, words]",
    ], "[[str(w) for w in words], [str(w) for w in same[0]], same[1] is words]")


def test_a_zip_longest_that_ran_out_of_an_iterable_is_watched_and_migrated(make_kernel, tmp_path):
    """`zip_longest('ab', 'xyz')` past 'b' has emptied the slot of the exhausted iterator in
    the tuple it keeps them in (a NULL in a tuple). The walk after the cell read that tuple
    (it took the iterator's referents from the collector) and the kernel died with a
    segmentation fault; so did the analysis of a cell calling a function that holds it (it
    walks what a C object holds). Referents' tuples are now read without their empty slots."""
    assert_same_or_named(make_kernel, tmp_path, [
        "import itertools\npairs = itertools.zip_longest('ab', 'xyz', fillvalue=[0])\nfirst = next(pairs)",
        "second = next(pairs)\nthird = next(pairs)\nheld = {'p': pairs}",
        "def rest(q=pairs):\n    return list(q)\nnone_left = rest()",
    ], "[first, second, third, none_left, list(pairs), list(held['p'])]")


def test_a_dict_iterator_at_the_end_still_raises_when_its_dict_grows(make_kernel, tmp_path):
    """`keys = iter(d)` advanced over every key, not yet asked again: it still holds `d`, and
    once `d` grows its next step raises "dictionary changed size during iteration". Shipped
    (the cell reads OS entropy), it came back as Python pickles a dict iterator with nothing
    left, an empty list iterator, which stops instead; verified (an iterator is checked by
    type). So did an `enumerate` over such an iterator. It is now rebuilt at the dict's end."""
    assert_same_or_named(make_kernel, tmp_path, [
        "import os\nsalt = os.urandom(2)\nd = {'a': 1}\nkeys = iter(d)\nnext(keys)\n"
        "numbered = enumerate(d.values(), 1)\nnext(numbered)",
        "def step(it):\n    try:\n        return next(it)\n    except Exception as e:\n        return type(e).__name__",
    ], "[d.update(z=0), step(keys), step(numbered)][1:]")
