"""Migration records on disk: one small JSON file, rewritten atomically at every phase change.

Runs in the service process. The service may be killed at any moment (the hub stops a managed
service when it stops; a pod is rescheduled), so a record is saved *before* the step it
announces starts, and the file is replaced atomically (temp file, fsync, rename): after a crash
it holds either the old or the new set of records, never a torn one. Unfinished records are
resumed at the next start (`Migrator.resume`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from elastic_spawner.service.model import Migration

log = logging.getLogger(__name__)

FORMAT = "elastic-spawner/migrations"
VERSION = 1


class RecordStore:
    """All migration records, newest last; finished ones beyond `keep_finished` are dropped."""

    def __init__(self, path: str | os.PathLike[str] | None, *, keep_finished: int = 1000) -> None:
        self.path = Path(path) if path else None
        self.keep_finished = keep_finished
        self.records: dict[str, Migration] = {}
        self.dirty = False

    def load(self) -> list[Migration]:
        """Read the file (missing: no records). A corrupt file is moved aside, never overwritten."""
        if self.path is None or not self.path.exists():
            return []
        try:
            doc = json.loads(self.path.read_text())
            if doc.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            records = [Migration.from_dict(d) for d in doc.get("migrations", [])]
        except (OSError, ValueError, KeyError, TypeError) as e:
            aside = self.path.with_name(self.path.name + ".corrupt")
            log.error("Migration records in %s are unreadable (%s); moved to %s, starting empty",
                      self.path, e, aside)
            try:
                os.replace(self.path, aside)
            except OSError:
                log.exception("Could not move %s aside", self.path)
            return []
        for r in records:
            self.records[r.id] = r
        return records

    def add(self, record: Migration) -> None:
        self.records[record.id] = record
        self.save()

    def get(self, migration_id: str) -> Migration | None:
        return self.records.get(migration_id)

    def all(self) -> list[Migration]:
        """Records oldest first (ids sort by creation time)."""
        return [self.records[k] for k in sorted(self.records)]

    def active(self) -> Iterable[Migration]:
        return (r for r in self.all() if not r.finished)

    def save(self) -> None:
        """Rewrite the file atomically; on failure keep everything in memory and log once."""
        self._trim()
        if self.path is None:
            return
        doc = {"format": FORMAT, "version": VERSION,
               "migrations": [r.to_dict() for r in self.all()]}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as fh:
                json.dump(doc, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            if self.dirty:
                log.info("Migration records saved to %s again", self.path)
            self.dirty = False
        except OSError as e:
            if not self.dirty:
                log.error("Could not save migration records to %s (%s); they are kept in memory "
                          "and saved at the next change", self.path, e)
            self.dirty = True
            try:
                tmp.unlink()
            except OSError:
                pass

    def _trim(self) -> None:
        finished = [r for r in self.all() if r.finished]
        for r in finished[: max(0, len(finished) - self.keep_finished)]:
            del self.records[r.id]
