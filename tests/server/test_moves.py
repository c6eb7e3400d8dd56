"""Which state a restore picks for a kernel whose notebook was renamed after the server checkpoint.

Store-level, no server: kernel checkpoints and move records are written as the server and the
engine write them (ids carry their time). The pinned checkpoint is in the old path's store; the
kernel's later checkpoints are in the new path's store; each store may also hold checkpoints of
*other* notebooks (before the kernel moved in, or after it moved out). A restore must take the
kernel's newest state and never another notebook's, nor an older one of its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kernel_agent.server.moves import Move, moves_store_url, resolve
from kernel_agent.server.pointer import kernel_key, kernel_store_url
from kernel_agent.store import open_store

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _id(minute: int, suffix: str = "") -> str:
    return (T0 + timedelta(minutes=minute)).strftime("%Y%m%dT%H%M%S%fZ") + "-0a1b2c3d" + suffix


class Stores:
    """A server store with kernel stores per notebook path and its move records."""

    def __init__(self, tmp_path: Path) -> None:
        self.base = (tmp_path / "store").as_uri()

    def url(self, path: str) -> str:
        return kernel_store_url(self.base, kernel_key(path, ""))

    def checkpoint(self, path: str, minute: int, background: bool = False) -> str:
        cid = _id(minute, ".bg" if background else "")
        open_store(self.url(path)).put_manifest(cid, b"{}")
        return cid

    def move(self, minute: int, kernel_id: str, old: str, new: str, lineage: list[str] | None = None) -> None:
        m = Move(id=_id(minute)[:-2] + "ab", kernel_id=kernel_id, lineage=lineage or [kernel_id],
                 from_path=old, from_store_url=self.url(old), to_path=new, to_store_url=self.url(new))
        open_store(moves_store_url(self.base)).put_manifest(m.id, m.to_bytes(None))

    def resolve(self, path: str, pinned: str, kernel_ids: list[str]) -> tuple[str, str | None]:
        r = resolve(self.base, kernel_ids=kernel_ids, kernel_store_url=self.url(path),
                    checkpoint_id=pinned, path=path)
        assert r.checkpoint_id in [c for c, _, _ in open_store(r.store_url)._manifests()]
        return r.checkpoint_id, r.path


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stores:
    monkeypatch.delenv("ELASTIC_CHECKPOINT_KEY", raising=False)
    return Stores(tmp_path)


def test_background_rounds_after_a_rename_are_restored_under_the_new_path(stores: Stores) -> None:
    pinned = stores.checkpoint("old.ipynb", 1)
    stores.checkpoint("old.ipynb", 2, background=True)
    stores.move(3, "k1", "old.ipynb", "new.ipynb")
    newest = stores.checkpoint("new.ipynb", 4, background=True)
    assert stores.resolve("old.ipynb", pinned, ["k1"]) == (newest, "new.ipynb")


def test_the_new_paths_older_checkpoint_of_another_notebook_never_wins(stores: Stores) -> None:
    """new.ipynb had a notebook (and a newer-than-pinned round) before this kernel moved there."""
    pinned = stores.checkpoint("old.ipynb", 1)
    stores.checkpoint("new.ipynb", 2, background=True)  # the previous new.ipynb, another kernel
    mine = stores.checkpoint("old.ipynb", 3, background=True)
    stores.move(4, "k1", "old.ipynb", "new.ipynb")
    assert stores.resolve("old.ipynb", pinned, ["k1"]) == (mine, "new.ipynb")


def test_a_notebook_opened_later_at_the_old_path_is_not_this_kernels_state(stores: Stores) -> None:
    pinned = stores.checkpoint("old.ipynb", 1)
    stores.move(2, "k1", "old.ipynb", "new.ipynb")
    stores.checkpoint("old.ipynb", 3, background=True)  # another notebook, now at old.ipynb
    assert stores.resolve("old.ipynb", pinned, ["k1"]) == (pinned, "new.ipynb")


def test_renames_are_followed_through_a_chain_and_for_the_kernels_restored_from_it(stores: Stores) -> None:
    """k2 was restored from k1 (its lineage names k1): its moves are the same notebook's."""
    pinned = stores.checkpoint("a.ipynb", 1)
    stores.move(2, "k2", "a.ipynb", "b.ipynb", lineage=["k2", "k1"])
    stores.move(4, "k2", "b.ipynb", "c.ipynb", lineage=["k2", "k1"])
    newest = stores.checkpoint("c.ipynb", 5, background=True)
    stores.move(6, "other", "c.ipynb", "d.ipynb")  # another kernel's rename: not followed
    assert stores.resolve("a.ipynb", pinned, ["k1"]) == (newest, "c.ipynb")


def test_a_newer_planned_checkpoint_keeps_the_pinned_one_as_asked(stores: Stores) -> None:
    """A planned checkpoint after the rename has its own server manifest: this older one was chosen."""
    pinned = stores.checkpoint("old.ipynb", 1)
    stores.move(2, "k1", "old.ipynb", "new.ipynb")
    stores.checkpoint("new.ipynb", 3)
    assert stores.resolve("old.ipynb", pinned, ["k1"]) == (pinned, "old.ipynb")


async def test_a_renamed_directory_moves_the_sessions_of_the_notebooks_in_it() -> None:
    """The contents API renamed `work/` (no session PATCH from a frontend): its sessions follow."""
    from kernel_agent.server.coordinator import Coordinator

    class Sessions:
        def __init__(self) -> None:
            self.paths = {"s1": "work/a.ipynb", "s2": "work/sub/b.ipynb", "s3": "workshop.ipynb"}

        async def list_sessions(self) -> list[dict]:
            return [{"id": sid, "path": p} for sid, p in self.paths.items()]

        async def update_session(self, session_id: str, **kw: str) -> None:
            self.paths[session_id] = kw["path"]

    sessions = Sessions()
    coordinator = Coordinator(kernel_manager=None, session_manager=sessions, kernel_spec_manager=None,
                              store_url=None, busy_timeout=0, checkpoint_timeout=1, restore_timeout=1)
    await coordinator.follow_contents_rename("work", "done")
    assert sessions.paths == {"s1": "done/a.ipynb", "s2": "done/sub/b.ipynb", "s3": "workshop.ipynb"}
