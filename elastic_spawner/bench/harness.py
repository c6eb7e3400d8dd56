"""Measure migration methods side by side on real kernels, in one run.

For each notebook (``notebooks.py``) and each store (file, S3 on loopback):

* **ours**: the notebook runs in kernel A with ``%load_ext kernel_agent``;
  ``kernel_agent.checkpoint(url)`` in A, ``kernel_agent.restore(url)`` in a fresh kernel B.
* **rerun**: the notebook runs in a fresh kernel C without any tool. C is also the
  no-monitoring reference for the overhead figure, and the session dill dumps.
* **dill**: ``dill.dump_module()`` in C, the bytes shipped through the same store as ours,
  ``dill.load_module()`` in a fresh kernel D.
* **kishu**: the notebook runs in kernel K under ``init_kishu`` (a commit per cell);
  an explicit commit, the ``.kishudb`` file shipped through the store (S3 only: Kishu writes a
  local file), ``checkout`` in a fresh kernel K2.

Correctness is the same test for every method: the portable digest
(``kernel_agent.changes.value_digest``) of all user variables together (values *and* aliasing
between them) in the restored kernel equals the one in the kernel it came from; one digest per
variable names what broke. Times are measured inside the kernels (``perf_counter`` around the
call), so kernel start-up and the harness's messaging are excluded for every method alike.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from elastic_spawner.bench.kernel import BenchKernel, KernelFailure
from elastic_spawner.bench.notebooks import Notebook

log = logging.getLogger("elastic_spawner.bench")

METHODS = ("ours", "dill", "rerun", "kishu")


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class MethodResult:
    """One method on one notebook and store. `correct` is None when the method did not finish."""

    method: str
    store: str
    status: str = "ok"  # ok | failed | unavailable (not installed) | skipped (see note)
    migration_s: float | None = None  # checkpoint + transfer + restore
    checkpoint_s: float | None = None  # checkpoint + upload
    restore_s: float | None = None  # download + restore
    bytes_stored: int | None = None
    correct: bool | None = None
    broken: list[str] = field(default_factory=list)  # variables that differ / are missing
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Runtime:
    """A full run of the notebook in one kernel (sums over cells, bracketing the tool's hooks)."""

    total_s: float
    hooks_s: float
    cells: int
    max_hook_s: float


@dataclass
class NotebookResult:
    name: str
    title: str
    family: str
    cells: int
    state_bytes: int | None = None  # serialized size of the whole state (ours, trial serialization)
    runtime_plain: Runtime | None = None  # no tool (kernel C)
    runtime_agent: Runtime | None = None  # our agent (kernel A)
    runtime_kishu: Runtime | None = None  # Kishu (kernel K)
    methods: list[MethodResult] = field(default_factory=list)
    throughput: dict[str, Any] | None = None
    opaque: list[str] = field(default_factory=list)  # variables checked by type only
    error: str = ""
    # what the notebook's header says the plan must do ({"shipped": [...], "recomputed": [...]})
    expect: dict[str, list[str]] = field(default_factory=dict)
    # seconds a fresh kernel takes just to import the modules the state's objects come from:
    # a lower bound of every method's restore time (probe.state_modules / probe.import_floor)
    import_floor_s: float | None = None
    state_modules: list[str] = field(default_factory=list)

    def method(self, method: str, store: str) -> MethodResult | None:
        for m in self.methods:
            if m.method == method and m.store in (store, "-"):
                return m
        return None

    def overhead_pct(self, tool: str = "agent") -> float | None:
        """End-to-end: notebook runtime with the tool vs without, in percent."""
        rt = self.runtime_agent if tool == "agent" else self.runtime_kishu
        if rt is None or self.runtime_plain is None or not self.runtime_plain.total_s:
            return None
        return 100.0 * (rt.total_s - self.runtime_plain.total_s) / self.runtime_plain.total_s

    def hook_overhead_pct(self, tool: str = "agent") -> float | None:
        """Time inside the tool's cell hooks as a percentage of the cells' own time."""
        rt = self.runtime_agent if tool == "agent" else self.runtime_kishu
        if rt is None or rt.total_s <= rt.hooks_s:
            return None
        return 100.0 * rt.hooks_s / (rt.total_s - rt.hooks_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------------


@dataclass
class StoreTarget:
    """Where checkpoints go for one store kind, and what a kernel needs to reach it."""

    kind: str  # file | s3
    new_url: Callable[[str], str]  # label -> a fresh, empty store URL
    kernel_env: dict[str, str]
    size_of: Callable[[str], int]  # URL -> bytes stored under it
    clear: Callable[[str], None]  # URL -> delete everything under it (frees moto's memory)
    description: str = ""
    #: objects larger than this are not shipped (moto keeps every object in this process's memory)
    max_object_bytes: int | None = None


def file_target(root: Path) -> StoreTarget:
    root.mkdir(parents=True, exist_ok=True)

    def new_url(label: str) -> str:
        d = root / f"{label}-{secrets.token_hex(3)}"
        d.mkdir(parents=True)
        return d.as_uri()

    def path_of(url: str) -> Path:
        return Path(url.removeprefix("file://"))

    def size_of(url: str) -> int:
        return sum(p.stat().st_size for p in path_of(url).rglob("*") if p.is_file())

    def clear(url: str) -> None:
        shutil.rmtree(path_of(url), ignore_errors=True)

    return StoreTarget("file", new_url, {}, size_of, clear, f"file:// on {root}")


@dataclass
class S3Endpoint:
    endpoint: str  # host:port
    access_key: str
    secret_key: str
    bucket: str
    name: str  # moto | rgw
    stop: Callable[[], None] | None = None

    def client(self) -> Any:
        from minio import Minio

        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key,
                     secure=False, region="us-east-1")


@contextmanager
def s3_endpoint() -> Iterator[S3Endpoint]:
    """Ceph RGW when ELASTIC_TEST_S3_* is set, else moto's threaded server in this process."""
    env = os.environ
    if env.get("ELASTIC_TEST_S3_ENDPOINT"):
        ep = S3Endpoint(
            endpoint=env["ELASTIC_TEST_S3_ENDPOINT"].split("://", 1)[-1].rstrip("/"),
            access_key=env.get("ELASTIC_TEST_S3_ACCESS_KEY", ""),
            secret_key=env.get("ELASTIC_TEST_S3_SECRET_KEY", ""),
            bucket=env.get("ELASTIC_TEST_S3_BUCKET", "elastic-test"),
            name="rgw",
        )
    else:
        from moto.server import ThreadedMotoServer

        # moto's werkzeug logs every request at INFO: thousands of lines per notebook
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        ep = S3Endpoint(f"{host}:{port}", "bench", "bench-secret", "elastic-bench", "moto",
                        stop=server.stop)
    try:
        client = ep.client()
        if not client.bucket_exists(ep.bucket):
            client.make_bucket(ep.bucket)
        yield ep
    finally:
        if ep.stop:
            ep.stop()


def s3_target(ep: S3Endpoint) -> StoreTarget:
    run = f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    client = ep.client()

    def new_url(label: str) -> str:
        return f"s3://{ep.bucket}/{run}/{label}-{secrets.token_hex(3)}"

    def prefix(url: str) -> str:
        return url.removeprefix(f"s3://{ep.bucket}/").rstrip("/") + "/"

    def size_of(url: str) -> int:
        return sum(o.size or 0 for o in client.list_objects(ep.bucket, prefix=prefix(url), recursive=True))

    def clear(url: str) -> None:
        for o in list(client.list_objects(ep.bucket, prefix=prefix(url), recursive=True)):
            client.remove_object(ep.bucket, o.object_name)

    kernel_env = {
        "ELASTIC_S3_ENDPOINT": ep.endpoint,
        "ELASTIC_S3_ACCESS_KEY": ep.access_key,
        "ELASTIC_S3_SECRET_KEY": ep.secret_key,
        "ELASTIC_S3_SECURE": "0",
        "ELASTIC_S3_REGION": "us-east-1",
    }
    what = "moto ThreadedMotoServer" if ep.name == "moto" else "Ceph RGW"
    return StoreTarget("s3", new_url, kernel_env, size_of, clear, f"s3:// on {what} at {ep.endpoint} (loopback)",
                       max_object_bytes=3_000_000_000 if ep.name == "moto" else None)


# --------------------------------------------------------------------------------------------
# Measuring one notebook
# --------------------------------------------------------------------------------------------


def compare(before: dict[str, Any], after: dict[str, Any]) -> tuple[bool, list[str]]:
    """Restored correctly? And which variables broke (missing, extra, differing, or aliasing)."""
    ok = before["all"] == after["all"]
    b, a = before["vars"], after["vars"]
    broken = sorted(
        [f"{n} (missing)" for n in b if n not in a]
        + [f"{n} (extra)" for n in a if n not in b]
        + [n for n in b if n in a and a[n] != b[n]]
    )
    if not ok and not broken:
        broken = ["aliasing between variables"]
    return ok, broken


def _short(exc: BaseException) -> str:
    """The last meaningful line of a kernel traceback, for a table cell."""
    text = str(exc).strip().splitlines()
    lines = [ln.strip() for ln in text if ln.strip() and not ln.strip().startswith(("File ", "^", "~"))]
    return (lines[-1] if lines else type(exc).__name__)[:160]


class Bench:
    """Runs notebooks through every method; one instance per benchmark run."""

    def __init__(self, workdir: Path, stores: list[StoreTarget], *, kishu: bool = True,
                 progress: Callable[[str], None] = print):
        self.workdir = workdir
        self.stores = stores
        self.kishu = kishu
        self.say = progress
        self.errors: list[str] = []  # full tracebacks, for the log file
        self._reference: dict[str, dict[str, Any]] = {}  # notebook -> digest of the original session

    def _fail(self, res: MethodResult, what: str, exc: BaseException) -> None:
        res.status, res.correct = "failed", False
        res.note = _short(exc)
        self.errors.append(f"== {what}\n{exc}\n{traceback.format_exc()}")
        self.say(f"    {what}: FAILED: {res.note}")

    def _kernel(self, cwd: Path, env: dict[str, str] | None = None) -> BenchKernel:
        return BenchKernel(cwd, env, log_path=self.workdir / "kernels.log")

    def _run_cells(self, k: BenchKernel, nb: Notebook) -> Runtime:
        for src in nb.cells:
            k.cell(src)
        t = k.probe("timings")
        return Runtime(t["total_s"], t["hooks_s"], t["cells"], t["max_hook_s"])

    def run(self, nb: Notebook) -> NotebookResult:
        res = NotebookResult(nb.name, nb.title, nb.family, len(nb.cells), expect=nb.expect)
        wd = self.workdir / nb.name
        wd.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            self._ours(nb, res, wd)
        except Exception as e:  # noqa: BLE001 - one notebook's failure must not stop the run
            res.error = f"ours: {_short(e)}"
            self.errors.append(f"== {nb.name}: ours\n{traceback.format_exc()}")
            self.say(f"    ours: notebook run FAILED: {_short(e)}")
        try:
            self._plain(nb, res, wd)
        except Exception as e:  # noqa: BLE001
            res.error += f" rerun/dill: {_short(e)}"
            self.errors.append(f"== {nb.name}: rerun/dill\n{traceback.format_exc()}")
            self.say(f"    rerun/dill: notebook run FAILED: {_short(e)}")
        self._kishu(nb, res, wd)
        shutil.rmtree(wd, ignore_errors=True)
        self.say(f"  {nb.name}: done in {time.perf_counter() - t0:.0f}s")
        return res

    # -- ours -----------------------------------------------------------------------------

    def _ours(self, nb: Notebook, res: NotebookResult, wd: Path) -> None:
        env: dict[str, str] = {}
        for st in self.stores:
            env.update(st.kernel_env)
        a = self._kernel(wd, env)
        try:
            a.probe("install", 0)
            a.probe("load_agent")
            a.probe("install", 1)
            self.say(f"  {nb.name}: running {len(nb.cells)} cells with the agent")
            res.runtime_agent = self._run_cells(a, nb)
            before = a.probe("digest")
            self._reference[nb.name] = before
            res.opaque = before["opaque"]
            self._import_floor(res, a, wd)
            for st in self.stores:
                m = MethodResult("ours", st.kind)
                res.methods.append(m)
                url = st.new_url(f"{nb.name}-ours")
                try:
                    ck = a.probe("ours_checkpoint", url)
                    m.checkpoint_s = ck["wall_s"]
                    m.bytes_stored = st.size_of(url)
                    res.state_bytes = ck["stats"].get("bytes_total_state")
                    m.details["checkpoint"] = {k: ck.get(k) for k in (
                        "shipped", "recomputed", "imported", "lost", "rerun_cells", "stats",
                        "plan")}
                    if nb.large and st.kind == "file":
                        res.throughput = self._throughput(a, st, nb.name)
                    b = self._kernel(wd, env)
                    try:
                        rs = b.probe("ours_restore", url)
                        after = b.probe("digest")
                    finally:
                        b.shutdown()
                    m.restore_s = rs["wall_s"]
                    m.migration_s = m.checkpoint_s + m.restore_s
                    m.correct, m.broken = compare(before, after)
                    m.details["restore"] = {k: rs.get(k) for k in (
                        "verified", "loaded", "recomputed", "lost", "mismatched", "rerun_cells",
                        "errors", "warnings", "timings")}
                    lost = ck.get("lost") or {}
                    notes = []
                    if lost:
                        notes.append(f"lost: {', '.join(lost)}")
                    if rs.get("verified") is False:
                        notes.append(f"agent verification failed: {', '.join(rs.get('mismatched') or [])}")
                    m.note = "; ".join(notes)
                    self.say(f"    ours/{st.kind}: {m.migration_s:.2f}s "
                             f"(ckpt {m.checkpoint_s:.2f} + restore {m.restore_s:.2f}), "
                             f"{'correct' if m.correct else 'WRONG: ' + ', '.join(m.broken)}")
                except Exception as e:  # noqa: BLE001
                    self._fail(m, f"ours/{st.kind}", e)
                finally:
                    st.clear(url)
        finally:
            a.shutdown()

    def _import_floor(self, res: NotebookResult, a: BenchKernel, wd: Path) -> None:
        """Time a fresh kernel without any tool importing what the state is made of."""
        res.state_modules = a.probe("state_modules")
        c = self._kernel(wd)
        try:
            res.import_floor_s = c.probe("import_floor", res.state_modules)["wall_s"]
        except Exception as e:  # noqa: BLE001 - a missing figure, not a failed notebook
            self.say(f"    import floor: not measured ({_short(e)})")
        finally:
            c.shutdown()

    def _throughput(self, a: BenchKernel, st: StoreTarget, name: str) -> dict[str, Any]:
        """Checkpoint throughput vs a raw sequential write of the same arrays to the same disk.

        Measured on a checkpoint that ships everything, serialized afresh (the planned one may
        well recompute cheap arrays instead, and then ships nothing to measure).
        """
        url = st.new_url(f"{name}-throughput")
        try:
            ck = a.probe("ours_checkpoint", url, "ship-all", False)
            raw = a.probe("raw_write", url.removeprefix("file://"), a.probe("array_names"))
        finally:
            st.clear(url)
        stats = ck["stats"]
        shipped = stats.get("bytes_shipped") or 0
        ckpt_Bps = shipped / ck["wall_s"] if ck["wall_s"] else 0.0
        upload_Bps = shipped / stats["upload_s"] if stats.get("upload_s") else 0.0
        out = {
            "bytes_shipped": shipped,
            "checkpoint_s": ck["wall_s"],
            "checkpoint_Bps": ckpt_Bps,
            "upload_s": stats.get("upload_s"),
            "upload_Bps": upload_Bps,
            "raw_bytes": raw["bytes"],
            "raw_s": raw["wall_s"],
            "raw_Bps": raw["Bps"],
            "fraction": ckpt_Bps / raw["Bps"] if raw["Bps"] else None,
            "upload_fraction": upload_Bps / raw["Bps"] if raw["Bps"] else None,
        }
        self.say(f"    throughput: checkpoint {ckpt_Bps / 1e6:.0f} MB/s vs raw write "
                 f"{raw['Bps'] / 1e6:.0f} MB/s ({100 * (out['fraction'] or 0):.0f}%)")
        return out

    # -- rerun + dill ---------------------------------------------------------------------

    def _plain(self, nb: Notebook, res: NotebookResult, wd: Path) -> None:
        env: dict[str, str] = {}
        for st in self.stores:
            env.update(st.kernel_env)
        rerun = MethodResult("rerun", "-", bytes_stored=0)
        res.methods.append(rerun)
        c = self._kernel(wd, env)
        try:
            c.probe("install", 0)
            c.probe("install", 1)
            self.say(f"  {nb.name}: running {len(nb.cells)} cells without a tool (rerun-all)")
            try:
                res.runtime_plain = self._run_cells(c, nb)
            except Exception as e:  # noqa: BLE001
                self._fail(rerun, "rerun", e)
                for st in self.stores:
                    d = MethodResult("dill", st.kind, status="failed", correct=False,
                                     note="the notebook did not run without the agent")
                    res.methods.append(d)
                return
            rerun.migration_s = rerun.restore_s = res.runtime_plain.total_s
            rerun.checkpoint_s = 0.0
            state = c.probe("digest")
            ours_before = self._reference.get(nb.name)
            if ours_before is not None:
                rerun.correct, rerun.broken = compare(ours_before, state)
            else:
                rerun.correct, rerun.note = None, "no reference state (the agent run failed)"
            self.say(f"    rerun: {rerun.migration_s:.2f}s, "
                     f"{'correct' if rerun.correct else 'WRONG: ' + ', '.join(rerun.broken)}")
            for st in self.stores:
                m = MethodResult("dill", st.kind)
                res.methods.append(m)
                url = st.new_url(f"{nb.name}-dill")
                try:
                    dump = c.probe("dill_dump", url)
                    m.checkpoint_s = dump["wall_s"]
                    m.bytes_stored = st.size_of(url)
                    m.details["dump"] = dump
                    d = self._kernel(wd, env)
                    try:
                        load = d.probe("dill_load", url, dump["key"], dump["bytes"])
                        after = d.probe("digest")
                    finally:
                        d.shutdown()
                    m.restore_s = load["wall_s"]
                    m.migration_s = m.checkpoint_s + m.restore_s
                    m.correct, m.broken = compare(state, after)
                    self.say(f"    dill/{st.kind}: {m.migration_s:.2f}s, "
                             f"{'correct' if m.correct else 'WRONG: ' + ', '.join(m.broken)}")
                except Exception as e:  # noqa: BLE001
                    self._fail(m, f"dill/{st.kind}", e)
                finally:
                    st.clear(url)
        finally:
            c.shutdown()

    # -- Kishu ----------------------------------------------------------------------------

    def _kishu(self, nb: Notebook, res: NotebookResult, wd: Path) -> None:
        reason = None
        if not self.kishu:
            reason = "not run (--no-kishu)"
        else:
            try:
                import kishu  # noqa: F401
            except ImportError as e:
                reason = f"not installed ({e})"
        if reason:
            for st in self.stores:
                res.methods.append(MethodResult("kishu", st.kind, status="unavailable", note=reason))
            return
        kd = wd / "kishu"
        kd.mkdir(exist_ok=True)
        nb_path = nb.write_ipynb(kd / f"{nb.name}.ipynb")
        db_path = kd / f"{nb.name}.kishudb"
        home = wd / "kishu-home"  # a fresh ~/.kishu per notebook: Kishu writes config there
        base_env = {"ENV_KISHU_TEST_MODE": "1", "KISHU_PATH_ROOT": str(home)}
        env = dict(base_env, TEST_NOTEBOOK_PATH=str(nb_path))
        for st in self.stores:
            env.update(st.kernel_env)
        results = {st.kind: MethodResult("kishu", st.kind) for st in self.stores}
        res.methods.extend(results.values())
        try:
            k = self._kernel(kd, env)
        except Exception as e:  # noqa: BLE001
            for m in results.values():
                self._fail(m, f"kishu/{m.store}", e)
            return
        try:
            try:
                k.probe("install", 0)
                k.probe("kishu_init")
                k.probe("install", 1)
                self.say(f"  {nb.name}: running {len(nb.cells)} cells under Kishu")
                callback_errors = []
                for src in nb.cells:
                    rep = k.execute(src)
                    if rep.status != "ok":
                        raise KernelFailure(f"notebook cell failed under Kishu:\n{src}\n{rep.traceback}")
                    if "Error in callback" in rep.stderr:
                        callback_errors.append(rep.stderr.strip().splitlines()[-1][:160])
                t = k.probe("timings")
                res.runtime_kishu = Runtime(t["total_s"], t["hooks_s"], t["cells"], t["max_hook_s"])
                commit = k.probe("kishu_commit")
                before = k.probe("digest")
            except Exception as e:  # noqa: BLE001
                for m in results.values():
                    self._fail(m, f"kishu/{m.store}", e)
                return
            for st in self.stores:
                m = results[st.kind]
                url = st.new_url(f"{nb.name}-kishu") if st.kind != "file" else ""
                try:
                    m.checkpoint_s = commit["wall_s"]
                    if callback_errors:
                        m.note = f"Kishu hook errors in {len(callback_errors)} cells: {callback_errors[0]}"
                    if st.kind == "file":
                        # Kishu's own storage is a local SQLite file: the file store case.
                        m.bytes_stored = db_path.stat().st_size
                        k2_env, k2_cwd = env, kd
                        fetch_s = 0.0
                    elif st.max_object_bytes and db_path.stat().st_size > st.max_object_bytes:
                        m.status, m.correct = "skipped", None
                        m.bytes_stored = db_path.stat().st_size
                        m.note = (f"not run: shipping a {db_path.stat().st_size / 1e9:.1f} GB .kishudb "
                                  f"through {st.description.split(' at ')[0]} (in-memory S3) would "
                                  "exhaust this machine's memory")
                        self.say(f"    kishu/{st.kind}: {m.note}")
                        continue
                    else:
                        up = k.probe("file_copy_to_store", url, str(db_path))
                        m.checkpoint_s += up["wall_s"]
                        m.bytes_stored = st.size_of(url)
                        k2_cwd = wd / f"kishu-{st.kind}"
                        k2_cwd.mkdir(exist_ok=True)
                        shutil.copy(nb_path, k2_cwd / nb_path.name)  # the notebook travels anyway
                        k2_env = dict(env, TEST_NOTEBOOK_PATH=str(k2_cwd / nb_path.name))
                    k2 = self._kernel(k2_cwd, k2_env)
                    try:
                        if st.kind != "file":
                            fetch_s = k2.probe("file_copy_from_store", url, up["key"], up["bytes"],
                                               str(k2_cwd / db_path.name))["wall_s"]
                        co = k2.probe("kishu_checkout", commit["commit_id"])
                        after = k2.probe("digest")
                    finally:
                        k2.shutdown()
                    m.restore_s = fetch_s + co["wall_s"]
                    m.migration_s = m.checkpoint_s + m.restore_s
                    m.correct, m.broken = compare(before, after)
                    self.say(f"    kishu/{st.kind}: {m.migration_s:.2f}s, "
                             f"{'correct' if m.correct else 'WRONG: ' + ', '.join(m.broken[:6])}")
                except Exception as e:  # noqa: BLE001
                    self._fail(m, f"kishu/{st.kind}", e)
                finally:
                    if url:
                        st.clear(url)
        finally:
            k.shutdown()
