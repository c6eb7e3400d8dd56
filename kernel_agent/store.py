"""Checkpoint storage: content-addressed blobs plus one manifest per checkpoint, written last.

Runs in the kernel process (synchronous, thread-safe: the checkpoint engine uploads and the
restore engine downloads several blobs at once from a thread pool).

URLs
----
* ``file:///abs/dir`` -- the embedded default (demo, tests, a shared volume). The path must be
  absolute; ``file://localhost/abs/dir`` is accepted too.
* ``s3://bucket/prefix`` -- any S3 server (MinIO, Ceph RGW, AWS S3) through the ``minio`` SDK.

Layout under the root (the directory, or ``bucket/prefix``)::

    blobs/<first 2 hex>/<key>            key = blake3 hex of the blob (immutable, shared)
    checkpoints/<id>/manifest.json       written last, atomically; never overwritten

A checkpoint without a manifest does not exist: an upload interrupted at any point (kill -9,
network down, disk full) leaves at worst unreferenced blobs, which ``prune`` collects.

Manifests are the engine's JSON; the store only reads its top-level ``"blobs": [key, ...]``
(also inside a signed envelope ``{"hmac_sha256": ..., "manifest": "<json>"}``) to know which
blobs a checkpoint references. A manifest whose blob list cannot be read stops blob collection
altogether: a blob of a kept checkpoint is never deleted.

S3 options (``open_store(url, **options)``) and their environment defaults
--------------------------------------------------------------------------
=============== ========================== ===================================================
option          environment variable        meaning
=============== ========================== ===================================================
endpoint        ELASTIC_S3_ENDPOINT        ``host:port`` or ``http(s)://host:port``; default
                                           ``s3.amazonaws.com``. A scheme sets ``secure``.
access_key      ELASTIC_S3_ACCESS_KEY      falls back to AWS_ACCESS_KEY_ID
secret_key      ELASTIC_S3_SECRET_KEY      falls back to AWS_SECRET_ACCESS_KEY
session_token   ELASTIC_S3_SESSION_TOKEN   falls back to AWS_SESSION_TOKEN
region          ELASTIC_S3_REGION          e.g. ``us-east-1``; unset: asked from the server
secure          ELASTIC_S3_SECURE          TLS on/off (``1/true/yes`` or ``0/false/no``);
                                           default on
cert_check      ELASTIC_S3_CERT_CHECK      verify the server certificate (default on)
ca_bundle       ELASTIC_S3_CA_BUNDLE       CA file for a private CA (else SSL_CERT_FILE, then
                                           certifi)
=============== ========================== ===================================================

Tuning options: ``part_size`` (multipart part, default 16 MiB), ``parallel`` (parallel part
uploads and ranged downloads, default 4), ``connect_timeout`` (s, default 10),
``read_timeout`` (s, default 300), ``retries`` (transient errors: connection errors and HTTP
500/502/503/504, with bounded exponential backoff; default 3), ``check`` (probe the bucket at
open time so a bad endpoint, bucket or credentials fail here with a clear message; default on).

file:// options: ``fsync`` (default on; off only for throw-away stores).

Every failure is a ``StoreError`` whose message names the problem and the fix.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import queue
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import blake3

from kernel_agent.buffers import BlobBuffer

log = logging.getLogger("kernel_agent")

__all__ = [
    "Bandwidth",
    "BlobRef",
    "CheckpointInfo",
    "Store",
    "StoreError",
    "FileStore",
    "S3Store",
    "open_store",
    "new_checkpoint_id",
    "blob_key",
]

SCHEMES = ("file", "s3")
MiB = 1 << 20
CHUNK = 16 * MiB  # hashing/writing granularity
PROBE_BYTES = 8 * MiB
GC_GRACE_S = 3600.0  # an unreferenced blob younger than this may belong to a running checkpoint

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class StoreError(Exception):
    """A storage failure, with a message naming the problem and the fix."""


@dataclass(frozen=True)
class BlobRef:
    key: str  # blake3 hex of the blob's bytes
    size: int
    uploaded: bool  # False: the store already had it (incremental checkpoint)


@dataclass(frozen=True)
class CheckpointInfo:
    id: str
    created: datetime  # when the manifest was committed (store clock, UTC)
    size: int  # bytes: manifest + the distinct blobs it references


@dataclass(frozen=True)
class Bandwidth:
    write_Bps: float
    read_Bps: float
    latency_s: float  # round trip of a tiny object: the per-object cost


_bandwidth_cache: dict[str, Bandwidth] = {}
_bandwidth_lock = threading.Lock()


def new_checkpoint_id() -> str:
    """A checkpoint id that sorts by creation time: ``20261126T143000123456Z-<random>``."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(4)


def _hasher() -> Any:
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def blob_key(parts: Iterable[bytes | memoryview]) -> str:
    """The content address of a blob given as parts (blake3 hex), without concatenating them."""
    h = _hasher()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def _flat(part: bytes | memoryview) -> memoryview:
    mv = memoryview(part)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv


def _chunks(parts: Sequence[bytes | memoryview]) -> Iterator[memoryview]:
    """Split large parts into CHUNK slices and coalesce small ones (fewer syscalls)."""
    small = bytearray()
    for part in parts:
        mv = _flat(part)
        if mv.nbytes < MiB:
            small += mv
            if len(small) >= MiB:
                yield memoryview(bytes(small))
                small.clear()
            continue
        if small:
            yield memoryview(bytes(small))
            small.clear()
        for i in range(0, mv.nbytes, CHUNK):
            yield mv[i : i + CHUNK]
    if small:
        yield memoryview(bytes(small))


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise StoreError(f"invalid blob key {key!r}: expected 64 lowercase hex digits (blake3)")


def _check_id(checkpoint_id: str) -> None:
    if (
        not isinstance(checkpoint_id, str)
        or not _ID_RE.match(checkpoint_id)
        or ".." in checkpoint_id
    ):
        raise StoreError(
            f"invalid checkpoint id {checkpoint_id!r}: use letters, digits, '.', '_' and '-' "
            "(at most 128), e.g. kernel_agent.store.new_checkpoint_id()"
        )


def _manifest_blobs(data: bytes) -> list[str] | None:
    """The blob keys a manifest references, or None when its blob list cannot be read."""
    try:
        doc = json.loads(data)
        if isinstance(doc, dict) and "blobs" not in doc and isinstance(doc.get("manifest"), str):
            doc = json.loads(doc["manifest"])  # signed envelope
        blobs = doc["blobs"]
        keys = [b if isinstance(b, str) else b["key"] for b in blobs]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None
    if not all(isinstance(k, str) for k in keys):
        return None
    return keys


def _verify(key: str, data: bytearray, size: int | None, where: str) -> bytearray:
    if size is not None and len(data) != size:
        raise StoreError(
            f"blob {key} is corrupted at {where}: {len(data)} bytes, expected {size}; the "
            "checkpoint cannot use it (the value is recomputed or reported lost)"
        )
    h = _hasher()
    h.update(data)
    if h.hexdigest() != key:
        raise StoreError(
            f"blob {key} is corrupted at {where}: its blake3 checksum does not match (its "
            "bytes changed after they were hashed: a thread of the notebook still writing to "
            "the value while it was checkpointed, or damage in the store); the checkpoint "
            "cannot use it (the value is recomputed or reported lost)"
        )
    return data


class Store:
    """Common API of the checkpoint stores (see module doc)."""

    url: str

    # -- blobs
    def put_blob(self, parts: Sequence[bytes | memoryview]) -> BlobRef:
        """Store a blob given as parts (never concatenated); skip it if the store has it."""
        raise NotImplementedError

    def get_blob(self, key: str, size: int | None = None) -> bytearray:
        """Read a blob and verify its checksum (and size) before returning it."""
        raise NotImplementedError

    def has_blob(self, key: str) -> bool:
        raise NotImplementedError

    # -- manifests
    def put_manifest(self, checkpoint_id: str, data: bytes) -> None:
        """Commit a checkpoint: atomic, last, and never over an existing checkpoint id."""
        raise NotImplementedError

    def get_manifest(self, checkpoint_id: str) -> bytes:
        raise NotImplementedError

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        """Delete a checkpoint (its manifest first, so it stops existing at once).

        Its blobs stay until ``prune`` finds no manifest referencing them.
        """
        raise NotImplementedError

    # -- backend primitives used by the shared logic below
    def _manifests(self) -> list[tuple[str, float, int]]:
        """(checkpoint id, commit time as epoch seconds, manifest size) of every checkpoint."""
        raise NotImplementedError

    def _blobs(self) -> dict[str, tuple[int, float]]:
        """key -> (size, modification time) of every stored blob."""
        raise NotImplementedError

    def _delete_blob(self, key: str) -> None:
        raise NotImplementedError

    def _blob_mtime(self, key: str) -> float | None:
        """Modification time of one blob now (None: gone)."""
        raise NotImplementedError

    def _probe(self, nbytes: int) -> Bandwidth:
        raise NotImplementedError

    # -- shared logic
    def list_checkpoints(self) -> list[CheckpointInfo]:
        """Committed checkpoints, oldest first (commit time, then id)."""
        entries = sorted(self._manifests(), key=lambda e: (e[1], e[0]))
        if not entries:
            return []
        sizes = {k: s for k, (s, _) in self._blobs().items()}
        out = []
        for cid, created, msize in entries:
            total = msize
            try:
                keys = _manifest_blobs(self.get_manifest(cid)) or []
            except StoreError:
                keys = []  # deleted meanwhile
            total += sum(sizes.get(k, 0) for k in set(keys))
            out.append(CheckpointInfo(cid, datetime.fromtimestamp(created, timezone.utc), total))
        return out

    def latest(self) -> str | None:
        """Id of the newest committed checkpoint, or None if there is none."""
        entries = self._manifests()
        if not entries:
            return None
        return max(entries, key=lambda e: (e[1], e[0]))[0]

    def prune(self, keep_last: int, *, grace_s: float = GC_GRACE_S) -> list[str]:
        """Keep the newest ``keep_last`` checkpoints; delete the others, then orphaned blobs.

        Returns the deleted checkpoint ids. A blob is deleted only if no remaining manifest
        references it *and* it is older than ``grace_s`` (a checkpoint being written right now
        by another kernel has uploaded blobs but no manifest yet; a reused blob is touched on
        reuse). If any remaining manifest cannot be read, no blob is deleted.
        """
        if keep_last < 1:
            raise StoreError(f"prune(keep_last={keep_last}): keep at least 1 checkpoint")
        entries = sorted(self._manifests(), key=lambda e: (e[1], e[0]))
        doomed = [cid for cid, _, _ in entries[: max(0, len(entries) - keep_last)]]
        for cid in doomed:
            self.delete_checkpoint(cid)
        self.collect_garbage(grace_s=grace_s)
        return doomed

    def collect_garbage(self, *, grace_s: float = GC_GRACE_S) -> list[str]:
        """Delete blobs no manifest references (older than ``grace_s``); returns their keys."""
        referenced: set[str] = set()
        for cid, _, _ in self._manifests():
            try:
                data = self.get_manifest(cid)
            except StoreError:
                continue  # deleted meanwhile: references nothing
            keys = _manifest_blobs(data)
            if keys is None:
                log.warning(
                    "kernel_agent: manifest of checkpoint %s at %s has no readable 'blobs' "
                    "list: not collecting any blob",
                    cid,
                    self.url,
                )
                return []
            referenced.update(keys)
        deleted = []
        for key, (_, mtime) in self._blobs().items():
            if key in referenced or time.time() - mtime < grace_s:
                continue
            # A checkpoint being written may have reused this blob since the listing (put_blob
            # refreshes its time instead of uploading it again): look again right before deleting.
            current = self._blob_mtime(key)
            if current is None or time.time() - current < grace_s:
                continue
            self._delete_blob(key)
            deleted.append(key)
        return deleted

    def measure(self) -> Bandwidth:
        """Write and read-back throughput and per-object latency; measured once per process."""
        with _bandwidth_lock:
            cached = _bandwidth_cache.get(self._measure_key())
            if cached is None:
                cached = self._probe(PROBE_BYTES)
                _bandwidth_cache[self._measure_key()] = cached
            return cached

    def measure_soon(self) -> None:
        """Start `measure` in the background unless its figures are known already.

        The probe is I/O (it writes and reads back a few MiB): started when a checkpoint begins,
        it overlaps the CPU-bound trial serialization instead of adding to the checkpoint's
        time. `measure` then waits for it under the same lock. A failing probe is only logged
        here: `measure`, called by the planner, probes again and reports it.
        """
        with _bandwidth_lock:
            if self._measure_key() in _bandwidth_cache:
                return

        def run() -> None:
            try:
                self.measure()
            except Exception:  # noqa: BLE001 - the planner's own measure() call reports it
                log.debug("kernel_agent: background probe of %s failed", self.url, exc_info=True)

        threading.Thread(target=run, name="kernel-agent-probe", daemon=True).start()

    def _measure_key(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


# =============================================================================== file://


def _os_error(exc: OSError, what: str, path: Path | str) -> StoreError:
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(
            f"no space left on device (or quota exceeded) while {what} {path}: free space there "
            "or point the store at a larger volume; nothing partial was left visible"
        )
    if code == errno.EFBIG:
        return StoreError(
            f"file too large while {what} {path} (file size limit / filesystem limit): raise the "
            "limit or use another store"
        )
    if code in (errno.EACCES, errno.EPERM):
        return StoreError(
            f"permission denied while {what} {path}: give this user write access or choose "
            "another directory"
        )
    if code == errno.EROFS:
        return StoreError(f"read-only filesystem while {what} {path}: use a writable directory")
    return StoreError(f"I/O error while {what} {path}: {exc}")


def _write_all(fd: int, mv: memoryview) -> None:
    while mv.nbytes:
        n = os.write(fd, mv)
        mv = mv[n:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Writer(threading.Thread):
    """Writes queued chunks to a file descriptor while the caller hashes ahead of it."""

    def __init__(self, fd: int) -> None:
        super().__init__(name="kernel-agent-blob-writer", daemon=True)
        self.fd = fd
        self.q: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self.error: OSError | None = None
        self.cancelled = threading.Event()

    def run(self) -> None:
        while True:
            chunk = self.q.get()
            if chunk is None or self.cancelled.is_set():
                return
            if self.error is not None:
                continue
            try:
                _write_all(self.fd, chunk)
            except OSError as exc:
                self.error = exc


class FileStore(Store):
    """``file:///abs/dir``: temp file + fsync + rename; hard link for no-overwrite manifests."""

    def __init__(self, url: str, root: Path, *, fsync: bool = True) -> None:
        self.url = url
        self.root = root
        self.fsync = fsync
        self.blob_dir = root / "blobs"
        self.ckpt_dir = root / "checkpoints"
        try:
            self.blob_dir.mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # an existing read-only store (restore from a read-only volume) is fine: writes
            # fail later with their own clear message
            if not (root.is_dir() and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)):
                raise _os_error(exc, "creating the store directory", root) from exc

    def _blob_path(self, key: str) -> Path:
        return self.blob_dir / key[:2] / key

    def _tmp(self, directory: Path) -> Path:
        return directory / f".tmp-{os.getpid()}-{secrets.token_hex(8)}"

    def put_blob(self, parts: Sequence[bytes | memoryview]) -> BlobRef:
        tmp = self._tmp(self.blob_dir)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise _os_error(exc, "creating a blob in", self.blob_dir) from exc
        writer = _Writer(fd)
        writer.start()
        h = _hasher()
        size = 0
        existed = False
        final: Path | None = None
        try:
            try:
                # One pass over the data: hash here, write in the writer thread (both release
                # the GIL). Hashing runs ahead of writing, so a blob the store already has is
                # recognised when only part of it is written, and the rest is not written.
                for chunk in _chunks(parts):
                    if writer.error is not None:
                        break
                    h.update(chunk)
                    size += chunk.nbytes
                    writer.q.put(chunk)
                if writer.error is None:
                    key = h.hexdigest()
                    final = self._blob_path(key)
                    existed = final.exists()
                    if existed:
                        writer.cancelled.set()
            finally:
                writer.q.put(None)  # always stop the writer before the descriptor is closed
                writer.join()
            if writer.error is not None:
                raise writer.error
            assert final is not None
            if existed:
                self._touch(final)
                return BlobRef(key, size, False)
            if self.fsync:
                os.fsync(fd)
            os.close(fd)
            fd = -1
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
            if self.fsync:
                _fsync_dir(final.parent)
            return BlobRef(key, size, True)
        except OSError as exc:
            raise _os_error(exc, "writing a blob in", self.blob_dir) from exc
        finally:
            if fd >= 0:
                os.close(fd)
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                log.warning("kernel_agent: could not remove temporary file %s", tmp)

    @staticmethod
    def _touch(path: Path) -> None:
        """Refresh a reused blob's mtime so a concurrent prune's grace period protects it."""
        try:
            os.utime(path)
        except OSError:
            pass

    def get_blob(self, key: str, size: int | None = None) -> bytearray:
        _check_key(key)
        path = self._blob_path(key)
        try:
            with open(path, "rb", buffering=0) as fh:
                n = os.fstat(fh.fileno()).st_size
                data = BlobBuffer(n)
                view = memoryview(data)
                got = 0
                while got < n:
                    r = fh.readinto(view[got:])
                    if not r:
                        break
                    got += r
                view.release()
                if got < n:
                    del data[got:]
        except FileNotFoundError as exc:
            raise StoreError(
                f"blob {key} is missing from {self.url}: the checkpoint is incomplete (deleted or "
                "pruned blobs?)"
            ) from exc
        except OSError as exc:
            raise _os_error(exc, "reading blob", path) from exc
        return _verify(key, data, size, self.url)

    def has_blob(self, key: str) -> bool:
        _check_key(key)
        return self._blob_path(key).is_file()

    def _blob_mtime(self, key: str) -> float | None:
        try:
            return self._blob_path(key).stat().st_mtime
        except FileNotFoundError:
            return None

    def put_manifest(self, checkpoint_id: str, data: bytes) -> None:
        _check_id(checkpoint_id)
        d = self.ckpt_dir / checkpoint_id
        final = d / "manifest.json"
        try:
            d.mkdir(exist_ok=True)
            if final.exists():
                raise StoreError(
                    f"checkpoint {checkpoint_id} already exists at {self.url}: checkpoints are "
                    "never overwritten; use a new id"
                )
            tmp = self._tmp(d)
            try:
                with open(tmp, "xb") as fh:
                    fh.write(data)
                    fh.flush()
                    if self.fsync:
                        os.fsync(fh.fileno())
                try:
                    os.link(tmp, final)  # atomic and fails if it exists: no overwrite race
                except FileExistsError as exc:
                    raise StoreError(
                        f"checkpoint {checkpoint_id} already exists at {self.url}: checkpoints "
                        "are never overwritten; use a new id"
                    ) from exc
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                        raise
                    os.replace(tmp, final)  # no hard links here (some FUSE/SMB): checked above
                if self.fsync:
                    _fsync_dir(d)
            finally:
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    pass
        except OSError as exc:
            raise _os_error(exc, "writing the manifest of", d) from exc

    def get_manifest(self, checkpoint_id: str) -> bytes:
        _check_id(checkpoint_id)
        path = self.ckpt_dir / checkpoint_id / "manifest.json"
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(
                f"checkpoint {checkpoint_id} does not exist at {self.url} (no manifest): list "
                "the checkpoints to pick an existing one"
            ) from exc
        except OSError as exc:
            raise _os_error(exc, "reading", path) from exc

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        _check_id(checkpoint_id)
        d = self.ckpt_dir / checkpoint_id
        try:
            (d / "manifest.json").unlink(missing_ok=True)
            if d.is_dir():
                for p in d.iterdir():
                    p.unlink(missing_ok=True)
                d.rmdir()
        except OSError as exc:
            raise _os_error(exc, "deleting checkpoint", d) from exc

    def _manifests(self) -> list[tuple[str, float, int]]:
        out = []
        try:
            with os.scandir(self.ckpt_dir) as it:
                for entry in it:
                    if entry.name.startswith(".") or not entry.is_dir():
                        continue
                    try:
                        st = os.stat(os.path.join(entry.path, "manifest.json"))
                    except FileNotFoundError:
                        continue  # no manifest: the checkpoint does not exist
                    out.append((entry.name, st.st_mtime, st.st_size))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _os_error(exc, "listing", self.ckpt_dir) from exc
        return out

    def _blobs(self) -> dict[str, tuple[int, float]]:
        out: dict[str, tuple[int, float]] = {}
        try:
            with os.scandir(self.blob_dir) as top:
                for sub in top:
                    if sub.name.startswith(".tmp-"):
                        self._reap_tmp(Path(sub.path))
                        continue
                    if not sub.is_dir():
                        continue
                    with os.scandir(sub.path) as it:
                        for e in it:
                            if _KEY_RE.match(e.name):
                                st = e.stat()
                                out[e.name] = (st.st_size, st.st_mtime)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise _os_error(exc, "listing", self.blob_dir) from exc
        return out

    @staticmethod
    def _reap_tmp(path: Path) -> None:
        """Remove a temp file left by a killed writer (old enough not to be in use)."""
        try:
            if time.time() - path.stat().st_mtime > GC_GRACE_S:
                path.unlink()
        except OSError:
            pass

    def _delete_blob(self, key: str) -> None:
        try:
            self._blob_path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise _os_error(exc, "deleting blob", self._blob_path(key)) from exc

    def _probe(self, nbytes: int) -> Bandwidth:
        payload = memoryview(os.urandom(nbytes))
        path = self.root / f".probe-{secrets.token_hex(8)}"
        try:
            t0 = time.perf_counter()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                for i in range(0, nbytes, CHUNK):
                    _write_all(fd, payload[i : i + CHUNK])
                os.fsync(fd)
            finally:
                os.close(fd)
            t1 = time.perf_counter()
            # Read back (from the page cache, as a restore right after often is; the restore
            # side re-measures nothing, so this is the planner's estimate for both directions).
            with open(path, "rb", buffering=0) as fh:
                buf = bytearray(nbytes)
                fh.readinto(buf)
            t2 = time.perf_counter()
            tiny = self.root / f".probe-{secrets.token_hex(8)}"
            t3 = time.perf_counter()
            with open(tiny, "xb") as fh:
                fh.write(b"x")
                os.fsync(fh.fileno())
            tiny.read_bytes()
            latency = time.perf_counter() - t3
            tiny.unlink()
        except OSError as exc:
            raise _os_error(exc, "measuring the store at", self.root) from exc
        finally:
            path.unlink(missing_ok=True)
        return Bandwidth(
            write_Bps=nbytes / max(t1 - t0, 1e-9),
            read_Bps=nbytes / max(t2 - t1, 1e-9),
            latency_s=latency,
        )


# =============================================================================== s3://


def _env(name: str, *fallbacks: str) -> str | None:
    for n in (name, *fallbacks):
        v = os.environ.get(n)
        if v:
            return v
    return None


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise StoreError(f"invalid boolean {value!r}: use true/false (or 1/0, yes/no)")


class _PartsReader(io.RawIOBase):
    """A read-only stream over blob parts, for minio's put_object (no full concatenation)."""

    def __init__(self, parts: Sequence[bytes | memoryview]) -> None:
        self._parts = [_flat(p) for p in parts]
        self._i = 0
        self._off = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        out: list[memoryview] = []
        want = size if size is not None and size >= 0 else 1 << 62
        while want and self._i < len(self._parts):
            mv = self._parts[self._i]
            take = mv[self._off : self._off + want]
            out.append(take)
            want -= take.nbytes
            self._off += take.nbytes
            if self._off >= mv.nbytes:
                self._i += 1
                self._off = 0
        return b"".join(out)


class S3Store(Store):
    """``s3://bucket/prefix`` through the minio SDK (MinIO, Ceph RGW, AWS S3)."""

    def __init__(self, url: str, bucket: str, prefix: str, **options: Any) -> None:
        from minio import Minio
        from minio.credentials import EnvAWSProvider
        from urllib3 import PoolManager, Retry, Timeout

        self.url = url
        self.bucket = bucket
        self.prefix = prefix
        self._uploading: dict[str, threading.Event] = {}  # blob key -> set when its put ends
        self._uploading_lock = threading.Lock()
        opts = dict(options)
        endpoint = opts.pop("endpoint", None) or _env("ELASTIC_S3_ENDPOINT") or "s3.amazonaws.com"
        secure_opt = opts.pop("secure", None)
        if secure_opt is None:
            secure_opt = _env("ELASTIC_S3_SECURE")
        parsed = urlsplit(endpoint if "://" in endpoint else "//" + endpoint)
        if (
            parsed.scheme not in ("", "http", "https")
            or not parsed.hostname
            or parsed.path not in ("", "/")
        ):
            raise StoreError(
                f"invalid S3 endpoint {endpoint!r}: use host:port or http(s)://host:port "
                "(no path), e.g. ELASTIC_S3_ENDPOINT=http://127.0.0.1:9000"
            )
        secure = _flag(secure_opt, parsed.scheme != "http")
        if parsed.scheme == "https":
            secure = True
        elif parsed.scheme == "http":
            secure = False
        self.endpoint = parsed.netloc
        self.secure = secure
        access_key = opts.pop("access_key", None) or _env(
            "ELASTIC_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"
        )
        secret_key = opts.pop("secret_key", None) or _env(
            "ELASTIC_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"
        )
        session_token = opts.pop("session_token", None) or _env(
            "ELASTIC_S3_SESSION_TOKEN", "AWS_SESSION_TOKEN"
        )
        if bool(access_key) != bool(secret_key):
            raise StoreError(
                "S3 credentials incomplete: give both access_key and secret_key (or "
                "ELASTIC_S3_ACCESS_KEY and ELASTIC_S3_SECRET_KEY)"
            )
        region = opts.pop("region", None) or _env("ELASTIC_S3_REGION", "AWS_REGION")
        cert_check_opt = opts.pop("cert_check", None)
        if cert_check_opt is None:
            cert_check_opt = _env("ELASTIC_S3_CERT_CHECK")
        cert_check = _flag(cert_check_opt, True)
        ca_bundle = (
            opts.pop("ca_bundle", None) or _env("ELASTIC_S3_CA_BUNDLE", "SSL_CERT_FILE") or None
        )
        if ca_bundle and not os.path.isfile(ca_bundle):
            raise StoreError(
                f"CA bundle {ca_bundle} does not exist: fix ca_bundle/ELASTIC_S3_CA_BUNDLE"
            )
        self.part_size = int(opts.pop("part_size", 16 * MiB))
        if self.part_size < 5 * MiB:
            raise StoreError(f"part_size {self.part_size} is below the S3 minimum of 5 MiB")
        self.parallel = max(1, int(opts.pop("parallel", 4)))
        connect_timeout = float(opts.pop("connect_timeout", 10.0))
        read_timeout = float(opts.pop("read_timeout", 300.0))
        retries = int(opts.pop("retries", 3))
        check = _flag(opts.pop("check", True), True)
        if opts:
            raise StoreError(
                f"unknown S3 store option(s) {sorted(opts)}: known are endpoint, access_key, "
                "secret_key, session_token, region, secure, cert_check, ca_bundle, part_size, "
                "parallel, connect_timeout, read_timeout, retries, check"
            )
        if not ca_bundle:
            import certifi

            ca_bundle = certifi.where()
        http = PoolManager(
            timeout=Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=max(10, 4 * self.parallel),
            cert_reqs="CERT_REQUIRED" if cert_check else "CERT_NONE",
            ca_certs=ca_bundle,
            retries=Retry(
                total=retries,
                connect=retries,
                read=retries,
                status=retries,
                backoff_factor=0.2,
                backoff_max=5.0,
                # spread apart: uploads that failed together (an overloaded server, or the same
                # blob put twice at once) would otherwise retry in lockstep and collide again
                backoff_jitter=0.3,
                status_forcelist=(500, 502, 503, 504),
                raise_on_status=False,
            ),
        )
        credentials = (
            None if access_key else EnvAWSProvider() if _env("AWS_ACCESS_KEY_ID") else None
        )
        self.client = Minio(
            self.endpoint,
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
            secure=secure,
            region=region,
            http_client=http,
            credentials=credentials,
            cert_check=cert_check,
        )
        if check:
            self._check()

    # -- naming
    def _k(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _blob_name(self, key: str) -> str:
        return self._k(f"blobs/{key[:2]}/{key}")

    def _manifest_name(self, checkpoint_id: str) -> str:
        return self._k(f"checkpoints/{checkpoint_id}/manifest.json")

    def _where(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"{self.url} at {scheme}://{self.endpoint}"

    # -- errors
    def _error(self, exc: BaseException, what: str) -> StoreError:
        from minio.error import InvalidResponseError, S3Error, ServerError
        from urllib3.exceptions import MaxRetryError, ProtocolError, SSLError, TimeoutError

        where = self._where()
        if isinstance(exc, S3Error):
            code = exc.code
            if code == "NoSuchBucket":
                return StoreError(
                    f"bucket {self.bucket!r} does not exist ({where}): create it (e.g. "
                    f"`mc mb`, `aws s3 mb s3://{self.bucket}`) or fix the URL"
                )
            if code in (
                "SignatureDoesNotMatch",
                "InvalidAccessKeyId",
                "InvalidToken",
                "ExpiredToken",
            ):
                return StoreError(
                    f"S3 credentials rejected by {where} ({code}) while {what}: wrong access "
                    "key/secret key; fix access_key/secret_key or ELASTIC_S3_ACCESS_KEY/"
                    "ELASTIC_S3_SECRET_KEY"
                )
            if code in ("AccessDenied", "AllAccessDisabled"):
                return StoreError(
                    f"access denied by {where} while {what}: wrong credentials, or they lack "
                    f"permission on bucket {self.bucket!r}; fix the keys or the bucket policy"
                )
            if code == "AuthorizationHeaderMalformed" or code == "PermanentRedirect":
                return StoreError(
                    f"wrong region for bucket {self.bucket!r} ({code}) at {where}: set "
                    "region/ELASTIC_S3_REGION to the bucket's region"
                )
            return StoreError(f"S3 error {code} while {what} ({where}): {exc.message}")
        if isinstance(exc, ServerError):
            return StoreError(
                f"S3 server error (HTTP {exc.status_code}) while {what} ({where}), after retries: "
                "the server is failing; check its health and retry"
            )
        status = getattr(exc, "_code", None)
        if isinstance(exc, InvalidResponseError) and isinstance(status, int) and status >= 500:
            return StoreError(
                f"S3 server error (HTTP {status}) while {what} ({where}), after retries: the "
                "server is failing or overloaded; check its health and retry"
            )
        if isinstance(exc, InvalidResponseError):
            return StoreError(
                f"{where} did not answer like an S3 server while {what}: check the endpoint "
                "(host, port, http vs https)"
            )
        reason = exc.reason if isinstance(exc, MaxRetryError) else exc
        if isinstance(reason, SSLError) or isinstance(exc, SSLError):
            return StoreError(
                f"TLS failure talking to {where} ({reason}): for a plain-HTTP server set "
                "secure=False (ELASTIC_S3_SECURE=0 or an http:// endpoint); for a private CA "
                "give ca_bundle (ELASTIC_S3_CA_BUNDLE)"
            )
        if isinstance(exc, MaxRetryError | ProtocolError | TimeoutError | ConnectionError):
            return StoreError(
                f"S3 endpoint {self.endpoint} is unreachable ({type(reason).__name__}: {reason}) "
                f"while {what}: check that the server runs and the endpoint "
                "(ELASTIC_S3_ENDPOINT), port and network are right"
            )
        if isinstance(exc, StoreError):
            return exc
        return StoreError(f"S3 failure while {what} ({where}): {type(exc).__name__}: {exc}")

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc, what) from exc

    def _check(self) -> None:
        """Fail at open time, clearly, on a bad endpoint, bucket or credentials."""

        def probe() -> None:
            # a GET (not HEAD) so the server's error code (SignatureDoesNotMatch, ...) is seen
            for _ in self.client.list_objects(
                self.bucket, prefix=self._k("checkpoints/"), recursive=False
            ):
                break

        self._call(f"opening {self.url}", probe)

    def _exists(self, name: str) -> Any:
        from minio.error import S3Error

        try:
            return self.client.stat_object(self.bucket, name)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound", "NotFound"):
                return None
            raise self._error(exc, f"checking {name}") from exc
        except Exception as exc:
            raise self._error(exc, f"checking {name}") from exc

    # -- blobs
    def put_blob(self, parts: Sequence[bytes | memoryview]) -> BlobRef:
        key = blob_key(parts)  # S3 names the object before the upload: hash first
        # One upload per key at a time from this process: two values with the same bytes in one
        # checkpoint would otherwise both miss the stat and send the bytes twice (and some
        # servers answer 500 to a PUT racing another PUT of the same key). The later caller
        # waits, then finds the blob there, or uploads it itself if the first upload failed.
        while True:
            with self._uploading_lock:
                done = self._uploading.get(key)
                if done is None:
                    done = self._uploading[key] = threading.Event()
                    break
            done.wait()
        try:
            return self._put_blob(key, parts)
        finally:
            with self._uploading_lock:
                del self._uploading[key]
            done.set()

    def _put_blob(self, key: str, parts: Sequence[bytes | memoryview]) -> BlobRef:
        size = sum(_flat(p).nbytes for p in parts)
        name = self._blob_name(key)
        existing = self._exists(name)
        if existing is not None and existing.size == size:
            self._touch(name, existing)
            return BlobRef(key, size, False)
        self._call(
            f"uploading blob {key}",
            self.client.put_object,
            self.bucket,
            name,
            _PartsReader(parts),
            size,
            part_size=self.part_size,
            num_parallel_uploads=self.parallel,
        )
        return BlobRef(key, size, True)

    def _touch(self, name: str, stat: Any) -> None:
        """Refresh an old reused blob's timestamp (server-side copy) for prune's grace period."""
        from minio.commonconfig import REPLACE, CopySource

        modified = stat.last_modified.timestamp() if stat.last_modified else time.time()
        if time.time() - modified < GC_GRACE_S / 2 or stat.size > 5 * 1024 * MiB:
            return
        try:
            self.client.copy_object(
                self.bucket,
                name,
                CopySource(self.bucket, name),
                metadata={"x-amz-meta-touched": str(int(time.time()))},
                metadata_directive=REPLACE,
            )
        except Exception:  # noqa: BLE001 - best effort: prune's grace is the safety net
            log.debug("kernel_agent: could not refresh %s", name, exc_info=True)

    def get_blob(self, key: str, size: int | None = None) -> bytearray:
        from minio.error import S3Error

        _check_key(key)
        name = self._blob_name(key)
        try:
            if size is None:
                st = self.client.stat_object(self.bucket, name)
                size = st.size
            assert size is not None
            data = BlobBuffer(size)
            view = memoryview(data)
            ranges = [(o, min(self.part_size, size - o)) for o in range(0, size, self.part_size)]

            def fetch(rng: tuple[int, int]) -> int:
                off, length = rng
                resp = self.client.get_object(self.bucket, name, offset=off, length=length)
                try:
                    got = 0
                    for piece in resp.stream(MiB):
                        n = min(len(piece), length - got)
                        view[off + got : off + got + n] = piece[:n]
                        got += n
                        if len(piece) > n:
                            raise StoreError(
                                f"blob {key} is corrupted at {self._where()}: larger than the "
                                f"expected {size} bytes"
                            )
                    return got
                finally:
                    resp.close()
                    resp.release_conn()

            if size == 0:
                got_total = 0
            elif len(ranges) == 1:
                got_total = fetch(ranges[0])
            else:
                with ThreadPoolExecutor(self.parallel, thread_name_prefix="kernel-agent-get") as ex:
                    got_total = sum(ex.map(fetch, ranges))
            view.release()
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound", "NotFound"):
                raise StoreError(
                    f"blob {key} is missing from {self._where()}: the checkpoint is incomplete "
                    "(deleted or pruned blobs?)"
                ) from exc
            if exc.code == "InvalidRange":
                raise StoreError(
                    f"blob {key} is corrupted at {self._where()}: shorter than the expected "
                    f"{size} bytes"
                ) from exc
            raise self._error(exc, f"downloading blob {key}") from exc
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc, f"downloading blob {key}") from exc
        if got_total != size:
            del data[got_total:]
        return _verify(key, data, size, self._where())

    def has_blob(self, key: str) -> bool:
        _check_key(key)
        return self._exists(self._blob_name(key)) is not None

    def _blob_mtime(self, key: str) -> float | None:
        st = self._exists(self._blob_name(key))
        if st is None:
            return None
        return st.last_modified.timestamp() if st.last_modified else 0.0

    # -- manifests
    def put_manifest(self, checkpoint_id: str, data: bytes) -> None:
        _check_id(checkpoint_id)
        name = self._manifest_name(checkpoint_id)
        if self._exists(name) is not None:
            raise StoreError(
                f"checkpoint {checkpoint_id} already exists at {self.url}: checkpoints are never "
                "overwritten; use a new id"
            )
        # a single PUT is atomic on S3: readers see the whole manifest or none
        self._call(
            f"writing the manifest of checkpoint {checkpoint_id}",
            self.client.put_object,
            self.bucket,
            name,
            io.BytesIO(data),
            len(data),
            content_type="application/json",
        )

    def get_manifest(self, checkpoint_id: str) -> bytes:
        from minio.error import S3Error

        _check_id(checkpoint_id)
        name = self._manifest_name(checkpoint_id)
        try:
            resp = self.client.get_object(self.bucket, name)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound", "NotFound"):
                raise StoreError(
                    f"checkpoint {checkpoint_id} does not exist at {self.url} (no manifest): "
                    "list the checkpoints to pick an existing one"
                ) from exc
            raise self._error(exc, f"reading checkpoint {checkpoint_id}") from exc
        except Exception as exc:
            raise self._error(exc, f"reading checkpoint {checkpoint_id}") from exc

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        _check_id(checkpoint_id)
        base = self._k(f"checkpoints/{checkpoint_id}/")
        manifest = self._manifest_name(checkpoint_id)
        self._call(
            f"deleting checkpoint {checkpoint_id}", self.client.remove_object, self.bucket, manifest
        )

        def rest() -> None:
            for obj in self.client.list_objects(self.bucket, prefix=base, recursive=True):
                self.client.remove_object(self.bucket, obj.object_name)

        self._call(f"deleting checkpoint {checkpoint_id}", rest)

    def _manifests(self) -> list[tuple[str, float, int]]:
        base = self._k("checkpoints/")

        def listing() -> list[tuple[str, float, int]]:
            out = []
            for obj in self.client.list_objects(self.bucket, prefix=base, recursive=True):
                rel = obj.object_name[len(base) :]
                cid, _, leaf = rel.partition("/")
                if leaf == "manifest.json" and _ID_RE.match(cid):
                    created = obj.last_modified.timestamp() if obj.last_modified else 0.0
                    out.append((cid, created, obj.size or 0))
            return out

        return self._call(f"listing checkpoints of {self.url}", listing)

    def _blobs(self) -> dict[str, tuple[int, float]]:
        base = self._k("blobs/")

        def listing() -> dict[str, tuple[int, float]]:
            out = {}
            for obj in self.client.list_objects(self.bucket, prefix=base, recursive=True):
                key = obj.object_name.rsplit("/", 1)[-1]
                if _KEY_RE.match(key):
                    mtime = obj.last_modified.timestamp() if obj.last_modified else 0.0
                    out[key] = (obj.size or 0, mtime)
            return out

        return self._call(f"listing blobs of {self.url}", listing)

    def _delete_blob(self, key: str) -> None:
        self._call(
            f"deleting blob {key}", self.client.remove_object, self.bucket, self._blob_name(key)
        )

    def _measure_key(self) -> str:
        return f"{self.url}@{self.endpoint}"

    def _probe(self, nbytes: int) -> Bandwidth:
        payload = os.urandom(nbytes)
        name = self._k(f".probe/{secrets.token_hex(8)}")
        tiny = self._k(f".probe/{secrets.token_hex(8)}")

        def run() -> Bandwidth:
            try:
                t0 = time.perf_counter()
                self.client.put_object(
                    self.bucket,
                    name,
                    io.BytesIO(payload),
                    nbytes,
                    part_size=self.part_size,
                    num_parallel_uploads=self.parallel,
                )
                t1 = time.perf_counter()
                resp = self.client.get_object(self.bucket, name)
                try:
                    got = resp.read()
                finally:
                    resp.close()
                    resp.release_conn()
                t2 = time.perf_counter()
                if len(got) != nbytes:
                    raise StoreError(f"{self._where()} returned {len(got)} of {nbytes} probe bytes")
                self.client.put_object(self.bucket, tiny, io.BytesIO(b"x"), 1)
                t3 = time.perf_counter()
                resp = self.client.get_object(self.bucket, tiny)
                try:
                    resp.read()
                finally:
                    resp.close()
                    resp.release_conn()
                latency = time.perf_counter() - t3
            finally:
                for n in (name, tiny):
                    try:
                        self.client.remove_object(self.bucket, n)
                    except Exception:  # noqa: BLE001 - probe cleanup is best effort
                        pass
            return Bandwidth(
                write_Bps=nbytes / max(t1 - t0, 1e-9),
                read_Bps=nbytes / max(t2 - t1, 1e-9),
                latency_s=latency,
            )

        return self._call(f"measuring {self.url}", run)


# =============================================================================== opening


def open_store(url: str, **options: Any) -> Store:
    """Open ``file:///abs/dir`` or ``s3://bucket/prefix`` (see the module doc for options)."""
    if not isinstance(url, str) or "://" not in url and not url.startswith("file:"):
        raise StoreError(
            f"invalid store URL {url!r}: use file:///absolute/dir or s3://bucket/prefix"
        )
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StoreError(
                f"invalid file store URL {url!r}: the path must be absolute, with three slashes: "
                f"file:///{parts.netloc}{parts.path} (file://{parts.netloc}/... names a host)"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise StoreError(
                f"invalid file store URL {url!r}: the path must be absolute, e.g. file:///abs/dir"
            )
        if parts.query or parts.fragment:
            raise StoreError(f"invalid file store URL {url!r}: no query or fragment allowed")
        fsync = _flag(options.pop("fsync", True), True)
        if options:
            raise StoreError(f"unknown file store option(s) {sorted(options)}: known is fsync")
        root = Path(os.path.normpath(path))
        return FileStore(f"file://{root}", root, fsync=fsync)
    if scheme == "s3":
        bucket = parts.netloc
        if not bucket:
            raise StoreError(f"invalid S3 store URL {url!r}: no bucket; use s3://bucket/prefix")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise StoreError(
                f"invalid bucket name {bucket!r} in {url!r}: 3-63 lowercase letters, digits, "
                "'.' and '-'"
            )
        if parts.query or parts.fragment:
            # (read nowhere: `?endpoint=...` went to the default endpoint, not the one named)
            raise StoreError(
                f"invalid S3 store URL {url!r}: no query or fragment allowed; set S3 options in "
                "the environment (ELASTIC_S3_ENDPOINT, ELASTIC_S3_ACCESS_KEY, ...) or pass them "
                "as store options"
            )
        prefix = "/".join(p for p in unquote(parts.path).split("/") if p)
        if ".." in prefix.split("/"):
            raise StoreError(f"invalid S3 store URL {url!r}: '..' in the prefix")
        norm = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return S3Store(norm, bucket, prefix, **options)
    raise StoreError(
        f"unknown store scheme {parts.scheme + '://' if parts.scheme else url!r} in {url!r}: "
        f"supported are {', '.join(s + '://' for s in SCHEMES)} (file:///abs/dir, "
        "s3://bucket/prefix)"
    )
