"""Library modules bound to variables travel by name (manifest action "import"), not as blobs.

A first cell like ``import os, numpy as np; os.makedirs('out', exist_ok=True)`` cannot be re-run
(it creates a directory). Shipped as blobs, its modules were dropped with everything else when
an eviction deadline left no time, and every re-run cell using `np` then failed.
"""

from __future__ import annotations

import json

from tests.engine.migrate import assert_verified, checkpoint, restore, run_all

SETUP = ("import os, json\nimport numpy as np\nimport os.path as osp\n"
         "os.makedirs('out', exist_ok=True)\nopen('out/log.txt', 'w').write('started')")


def _manifest(root) -> dict:
    return json.loads(next((root / "checkpoints").rglob("manifest.json")).read_text())


def test_library_modules_come_back_when_the_deadline_leaves_no_time_to_ship(make_kernel, tmp_path):
    url = (tmp_path / "store").as_uri()
    a = make_kernel()
    run_all(a, [SETUP, "arr = np.arange(10) * 2", "y = osp.join('a', 'b') + json.dumps([1])"])
    c = checkpoint(a, url, deadline_s=0.0)
    assert c["lost"] == {}, c["lost"]
    assert c["imported"] == ["json", "np", "os", "osp"]
    assert c["recomputed"] == ["arr", "y"]
    doc = _manifest(tmp_path / "store")
    assert doc["schema_version"] == 2
    imports = [e for e in doc["covariables"] if e["action"] == "import"]
    assert {n: m for e in imports for n, m in e["modules"].items()} == {
        "json": "json", "np": "numpy", "os": "os", "osp": "posixpath"}
    assert all(e["blob"] is None for e in imports)

    b = make_kernel()
    r = restore(b, url)
    assert_verified(r)
    assert r["variables"]["np"]["action"] == "loaded"
    assert b.value("[arr.tolist(), y, np is __import__('numpy'), osp is os.path]") == [
        [0, 2, 4, 6, 8, 10, 12, 14, 16, 18], "a/b[1]", True, True]


def test_a_notebooks_own_module_with_changed_state_is_shipped_not_imported(make_kernel, tmp_path):
    url = (tmp_path / "store").as_uri()
    a = make_kernel()
    run_all(a, ["open('counter.py', 'w').write('N = 0\\ndef bump():\\n    global N\\n    N += 1\\n')",
                "import counter, math", "counter.bump(); counter.bump()"])
    c = checkpoint(a, url)
    assert "counter" not in c["imported"] and c["imported"] == ["math"]
    b = make_kernel()
    r = restore(b, url)
    assert_verified(r)
    assert b.value("counter.N") == 2


def test_a_module_missing_at_restore_is_imported_again_by_its_cell(make_kernel, tmp_path):
    url = (tmp_path / "store").as_uri()
    a = make_kernel()
    run_all(a, ["import math", "r = math.sqrt(16)"])
    checkpoint(a, url)
    path = next((tmp_path / "store" / "checkpoints").rglob("manifest.json"))
    doc = json.loads(path.read_text())
    for e in doc["covariables"]:
        if e["action"] == "import":
            e["modules"] = {n: "no_such_module_here" for n in e["modules"]}
    path.write_text(json.dumps(doc))
    b = make_kernel()
    r = restore(b, url)
    assert_verified(r)
    assert r["variables"]["math"]["action"] == "recomputed"
    assert any("math: could not be imported (ModuleNotFoundError" in w for w in r["warnings"]), r
    assert b.value("[math.pi > 3, r]") == [True, 4.0]


def test_a_module_missing_at_restore_whose_cell_cannot_rerun_is_named_lost(make_kernel, tmp_path):
    url = (tmp_path / "store").as_uri()
    a = make_kernel()
    run_all(a, [SETUP])
    checkpoint(a, url)
    path = next((tmp_path / "store" / "checkpoints").rglob("manifest.json"))
    doc = json.loads(path.read_text())
    for e in doc["covariables"]:
        if e["action"] == "import" and "np" in e["names"]:
            e["modules"] = {"np": "no_such_module_here"}
    path.write_text(json.dumps(doc))
    b = make_kernel()
    r = restore(b, url)
    assert r["variables"]["np"]["action"] == "lost"
    assert "could not be imported (ModuleNotFoundError" in r["lost"]["np"]
    assert "cannot be recomputed" in r["lost"]["np"]
    assert r["variables"]["os"] == {"action": "loaded", "verified": True}


def test_a_version_1_manifest_is_still_restored(make_kernel, tmp_path):
    url = (tmp_path / "store").as_uri()
    a = make_kernel()
    run_all(a, ["x = [1, 2, 3]"])
    checkpoint(a, url)
    path = next((tmp_path / "store" / "checkpoints").rglob("manifest.json"))
    doc = json.loads(path.read_text())
    doc["schema_version"] = 1
    for e in doc["covariables"]:
        e.pop("modules")
    path.write_text(json.dumps(doc))
    b = make_kernel()
    assert_verified(restore(b, url))
    assert b.value("x") == [1, 2, 3]
