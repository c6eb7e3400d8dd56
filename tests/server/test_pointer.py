"""Pointer format and store layout (pure functions, no server)."""

from __future__ import annotations

import pytest

from kernel_agent.server.pointer import (
    PointerError,
    format_pointer,
    kernel_key,
    kernel_store_url,
    new_checkpoint_id,
    parse_pointer,
)


@pytest.mark.parametrize("store", ["file:///var/ckpt/alice", "s3://bucket/users/alice", "s3://bucket"])
def test_pointer_round_trips(store: str) -> None:
    cid = new_checkpoint_id()
    p = parse_pointer(format_pointer(store, cid))
    assert (p.store_url, p.checkpoint_id) == (store, cid)


def test_store_url_query_survives_in_kernel_urls() -> None:
    url = kernel_store_url("s3://b/p?endpoint=http://127.0.0.1:9000", "nb-1")
    assert url == "s3://b/p/kernels/nb-1?endpoint=http://127.0.0.1:9000"


@pytest.mark.parametrize(
    "bad",
    ["", "file:///x", "http://x/y#20250101T000000000000Z-abcdef", "file:///x#nope",
     "file://relative/x#20250101T000000000000Z-abcdef", "s3:///prefix#20250101T000000000000Z-abcdef",
     "s3://bucket/p?endpoint=http://127.0.0.1:9000#20250101T000000000000Z-abcdef"],
)
def test_bad_pointers_are_refused_with_the_expected_shape(bad: str) -> None:
    with pytest.raises(PointerError) as e:
        parse_pointer(bad)
    # every message shows what a valid value looks like
    assert any(x in str(e.value) for x in ("file:///", "s3://bucket", "<store-url>#"))


def test_kernel_key_is_stable_per_path_and_distinct() -> None:
    assert kernel_key("a/b.ipynb", "k1") == kernel_key("a/b.ipynb", "k2")
    assert kernel_key("a/b.ipynb", "k1") != kernel_key("a-b.ipynb", "k1")
    assert kernel_key(None, "k1") == "kernel-k1"
