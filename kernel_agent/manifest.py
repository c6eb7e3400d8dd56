"""The kernel checkpoint manifest: a versioned JSON document, committed last.

Runs in the kernel process. A checkpoint exists once its manifest does; everything the restore
needs to decide what to trust, what to load and what to re-run is in it. The manifest may be
authenticated with an HMAC (key from ``ELASTIC_CHECKPOINT_KEY``): blobs are addressed by their
BLAKE3 hash, so a verified manifest vouches for every blob it lists, and nothing is unpickled
before both checks pass.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field, fields

SCHEMA = "elastic-spawner/kernel-checkpoint"
SCHEMA_VERSION = 2
#: versions this agent reads: 2 added the "import" action (co-variables of library modules,
#: named in `modules`, no blob); a version 1 manifest is a version 2 one without it
READABLE_VERSIONS = (1, 2)
KEY_ENV = "ELASTIC_CHECKPOINT_KEY"


class ManifestError(Exception):
    """The manifest cannot be used: wrong schema, corrupted, or failed authentication."""


@dataclass
class CovariableEntry:
    """One co-variable (names sharing objects) and what the checkpoint did with it."""

    key: str
    names: list[str]
    action: str  # "ship" | "recompute" | "lost" | "import"
    digest: str
    position: int  # cell index after which it is loaded (-1: before any re-run)
    requires: list[int] | None = None  # cells whose re-run recreates it (None: cannot be recomputed)
    blob: str | None = None
    nbytes: int = 0
    opaque: list[str] = field(default_factory=list)  # names verified by type only
    error: str | None = None  # serialization error, when it could not be shipped
    reason: str | None = None  # why it is lost
    packages: list[str] = field(default_factory=list)  # libraries its objects come from
    digest_loaded: str | None = None  # as its pickle rebuilds it, when that differs (lazy state)
    modules: dict[str, str] | None = None  # action "import": name -> module to import
    # recomputed, holding ids: its digest with ids as their objects' places (identity_digest)
    digest_ids: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> CovariableEntry:
        return cls(**d)


@dataclass
class Manifest:
    checkpoint_id: str
    created: str
    graph: dict
    plan: dict
    covariables: list[CovariableEntry]
    rng_final: dict
    environment: dict
    stats: dict
    execution_count: int = 0
    parent: str | None = None
    background: bool = False  # written by a background round (kernel_agent.background)
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    @property
    def blobs(self) -> list[str]:
        return sorted({c.blob for c in self.covariables if c.blob})

    def to_dict(self) -> dict:
        # not `asdict(self)`: that deep-copies the graph and the plan, every list and dict of
        # them (which `to_bytes` only reads), and took seconds for a namespace of 10k names
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        entry = [f.name for f in fields(CovariableEntry)]
        d["covariables"] = [{k: getattr(c, k) for k in entry} for c in self.covariables]
        d["blobs"] = self.blobs  # read by Store.prune to know which blobs are referenced
        return d

    def to_bytes(self, key: bytes | None = None) -> bytes:
        """Canonical JSON; with a key, wrapped with its HMAC-SHA256."""
        body = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        if key is None:
            return body
        mac = hmac.new(key, body, hashlib.sha256).hexdigest()
        return json.dumps({"hmac_sha256": mac, "manifest": body.decode()}).encode()

    @classmethod
    def from_bytes(cls, data: bytes, key: bytes | None = None) -> Manifest:
        """Parse and check a manifest before anything it points at is touched.

        With a key, an unsigned or wrongly signed manifest is refused: loading a checkpoint
        runs code (pickles), so its origin must be proven, not assumed.
        """
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ManifestError(f"the manifest is not valid JSON ({e}): it is corrupted") from e
        if isinstance(doc, dict) and "hmac_sha256" in doc:
            body = str(doc.get("manifest", "")).encode()
            if key is None:
                raise ManifestError(
                    f"the checkpoint is signed but no key is configured: set {KEY_ENV} to the "
                    "key it was written with"
                )
            expected = hmac.new(key, body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, str(doc["hmac_sha256"])):
                raise ManifestError(
                    "the manifest failed authentication (HMAC mismatch): it was altered or "
                    "written with another key; refusing to load it"
                )
            doc = json.loads(body)
        elif key is not None:
            raise ManifestError(
                f"the manifest is not signed but {KEY_ENV} is set: refusing an unauthenticated "
                "checkpoint"
            )
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ManifestError("this is not an ElasticSpawner kernel checkpoint manifest")
        version = doc.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise ManifestError(
                f"checkpoint schema version {version} is not supported by this agent (it reads "
                f"versions {', '.join(map(str, READABLE_VERSIONS))}): restore it with a matching "
                "elastic-spawner version"
            )
        doc.pop("blobs", None)
        try:
            doc["covariables"] = [CovariableEntry.from_dict(c) for c in doc["covariables"]]
            return cls(**doc)
        except (KeyError, TypeError) as e:
            raise ManifestError(f"the manifest is incomplete or malformed ({e})") from e


def signing_key() -> bytes | None:
    """The checkpoint authentication key from the environment, if any."""
    value = os.environ.get(KEY_ENV)
    return value.encode() if value else None
