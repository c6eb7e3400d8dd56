"""kernel_agent.dictversion: telling that a dict changed without reading its entries."""

from __future__ import annotations

import pytest

from kernel_agent.dictversion import VersionWatch, dict_version


@pytest.fixture
def nested() -> dict:
    if dict_version({}) is None:
        pytest.skip("no version tag on this interpreter: watches never report unchanged")
    return {"display": {"max_rows": 60, "precision": 6}, "mode": {"copy": True}}


def test_a_watch_sees_a_change_in_any_of_its_dicts(nested):
    for change in ("d['display']['max_rows'] = 10", "d['mode']['new'] = 1",
                   "del d['mode']['copy']", "d['mode'] = {'copy': True}"):
        watch = VersionWatch([nested, nested["display"], nested["mode"]])
        assert watch.unchanged()
        exec(change, {"d": nested})
        assert not watch.unchanged(), change


def test_a_watch_from_tags_read_earlier_sees_a_change_made_since(nested):
    tags = [dict_version(nested["display"])]
    nested["display"]["precision"] = 3  # after the entries were read, before the watch
    assert not VersionWatch([nested["display"]], tags).unchanged()


def test_a_watch_of_something_else_than_a_dict_is_never_unchanged(nested):
    class Options(dict):
        pass

    assert not VersionWatch([Options(a=1)]).unchanged()
    assert not VersionWatch([nested], [None]).unchanged()
