"""Checkpoint store throughput: serialize + put_blob vs a raw sequential write of the same bytes.

Not a test: prints a table (results are recorded in docs/store-throughput.md).

    .venv/bin/python benchmarks/store_throughput.py [--gib 1] [--dir /path/on/the/disk] [--repeat 3]

Rows:
* raw write+fsync     -- open/write/fsync of exactly the bytes the blobs hold, one file per
                         co-variable, sequentially: what the disk can do.
* file store, serial  -- per co-variable: serialize.dumps + FileStore.put_blob (hash + write
                         pipeline, fsync, rename), one after the other.
* file store, 4 thr   -- the same with 4 uploader threads, as kernel_agent.checkpoint does.
* file store, again   -- the same data a second time: every blob already stored (incremental).
* get_blob + loads    -- read back, verify blake3, unpickle zero-copy.
* s3 (moto/RGW)       -- put_blob / get_blob through the S3 protocol (moto: in-process Python
                         server, so this measures moto more than the client; RGW when
                         ELASTIC_TEST_S3_ENDPOINT is set).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernel_agent.serialize import Serialized, dumps, loads  # noqa: E402
from kernel_agent.store import open_store  # noqa: E402

MiB = 1 << 20


def make_state(total: int, n: int = 8) -> dict[str, dict[str, np.ndarray]]:
    """``n`` co-variables of random float64 data (incompressible, like real numbers)."""
    rng = np.random.default_rng(0)
    per = total // n // 8
    return {f"v{i}": {f"v{i}": rng.random(per)} for i in range(n)}


def raw_write(directory: Path, blobs: list[Serialized]) -> None:
    for i, s in enumerate(blobs):
        fd = os.open(directory / f"raw{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for p in s.parts:
                mv = memoryview(p).cast("B")
                while mv.nbytes:
                    mv = mv[os.write(fd, mv[: 64 * MiB]) :]
            os.fsync(fd)
        finally:
            os.close(fd)


def timed(fn: Callable[[], object], repeat: int, setup: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(repeat):
        if setup:
            setup()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--gib", type=float, default=1.0, help="state size (default 1 GiB)")
    ap.add_argument(
        "--dir", default=None, help="directory on the disk to measure (default: a temp dir)"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--s3-mib", type=int, default=256, help="bytes through S3 (default 256 MiB)")
    args = ap.parse_args()

    total = int(args.gib * (1 << 30))
    state = make_state(total)
    base = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.dir))
    rows: list[tuple[str, int, float]] = []
    try:
        t = time.perf_counter()
        blobs = [dumps(v) for v in state.values()]
        ser_s = time.perf_counter() - t
        nbytes = sum(s.nbytes for s in blobs)
        rows.append(("serialize.dumps only (zero-copy)", nbytes, ser_s))

        raw_dir = base / "raw"

        def fresh_raw() -> None:
            shutil.rmtree(raw_dir, ignore_errors=True)
            raw_dir.mkdir()

        store_dir = base / "store"
        holder: dict[str, object] = {}

        def fresh_store() -> None:
            shutil.rmtree(store_dir, ignore_errors=True)
            holder["store"] = open_store(f"file://{store_dir}")

        def serial() -> None:
            st = holder["store"]
            for v in state.values():
                st.put_blob(dumps(v).parts)  # type: ignore[attr-defined]

        def threaded() -> None:
            st = holder["store"]
            sers = [dumps(v) for v in state.values()]
            with ThreadPoolExecutor(4) as ex:
                list(ex.map(lambda s: st.put_blob(s.parts), sers))  # type: ignore[attr-defined]

        # interleaved, so that drifts of the disk/VM hit every variant alike
        raw_t, serial_t, threaded_t = [], [], []
        for _ in range(args.repeat):
            raw_t.append(timed(lambda: raw_write(raw_dir, blobs), 1, fresh_raw))
            serial_t.append(timed(serial, 1, fresh_store))
            threaded_t.append(timed(threaded, 1, fresh_store))
        shutil.rmtree(raw_dir, ignore_errors=True)
        raw_s = statistics.median(raw_t)
        rows.append(("raw write+fsync (baseline)", nbytes, raw_s))
        rows.append(("file store: dumps + put_blob, serial", nbytes, statistics.median(serial_t)))
        rows.append(
            ("file store: dumps + put_blob, 4 threads", nbytes, statistics.median(threaded_t))
        )
        again_s = timed(serial, args.repeat)  # store now holds every blob
        rows.append(("file store: same state again (all reused)", nbytes, again_s))

        st = holder["store"]
        refs = [st.put_blob(s.parts) for s in blobs]  # type: ignore[attr-defined]

        def read_back() -> None:
            for r in refs:
                out = loads(st.get_blob(r.key, r.size))  # type: ignore[attr-defined]
                assert out

        get_s = timed(read_back, args.repeat)
        rows.append(("file store: get_blob + loads (page cache)", nbytes, get_s))

        s3_rows(rows, state, args.s3_mib * MiB)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(
        f"\nstate: {len(state)} co-variables of float64, {total / (1 << 30):.2f} GiB; "
        f"median of {args.repeat}; cpus: {os.cpu_count()}; dir: {args.dir or tempfile.gettempdir()}"
    )
    print(f"{'operation':46} {'MiB':>8} {'seconds':>8} {'MiB/s':>8} {'% of raw':>8}")
    raw_Bps = nbytes / raw_s
    for name, n, secs in rows:
        bps = n / secs
        pct = f"{100 * bps / raw_Bps:7.0f}%" if "file store" in name or "raw" in name else ""
        print(f"{name:46} {n / MiB:8.0f} {secs:8.2f} {bps / MiB:8.0f} {pct:>8}")


def s3_rows(rows: list[tuple[str, int, float]], state: dict, budget: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.s3 import S3Server, start_moto

    servers: list[S3Server] = []
    moto = start_moto()
    servers.append(moto)
    if os.environ.get("ELASTIC_TEST_S3_ENDPOINT"):
        servers.append(
            S3Server(
                name="rgw",
                endpoint=os.environ["ELASTIC_TEST_S3_ENDPOINT"].split("://")[-1],
                access_key=os.environ.get("ELASTIC_TEST_S3_ACCESS_KEY", ""),
                secret_key=os.environ.get("ELASTIC_TEST_S3_SECRET_KEY", ""),
                bucket=os.environ.get("ELASTIC_TEST_S3_BUCKET", "elastic-test"),
                checks_signatures=True,
            )
        )
    rng = np.random.default_rng(1)
    data = {"s3": rng.random(budget // 8)}
    s = dumps(data)
    try:
        for srv in servers:
            st = open_store(srv.url(), **srv.options())
            t = time.perf_counter()
            ref = st.put_blob(s.parts)
            put_s = time.perf_counter() - t
            rows.append((f"s3 ({srv.name}): put_blob (multipart)", s.nbytes, put_s))
            t = time.perf_counter()
            out = loads(st.get_blob(ref.key, ref.size))
            get_s = time.perf_counter() - t
            assert np.array_equal(out["s3"], data["s3"])
            rows.append((f"s3 ({srv.name}): get_blob + loads", s.nbytes, get_s))
            bw = st.measure()
            rows.append(
                (f"s3 ({srv.name}): measure() probe write", 8 * MiB, 8 * MiB / bw.write_Bps)
            )
            st.delete_checkpoint("none")
            st.collect_garbage(grace_s=0)
    finally:
        moto._stop()


if __name__ == "__main__":
    main()
