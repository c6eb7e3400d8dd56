"""State of the global random generators (`random`, `numpy.random`, torch's default CPU
generator, and the private ones of `_LIBRARY_GENERATORS`), as JSON-safe data.

Runs inside the user's kernel process. The monitor records the generators' state before each
cell that draws from them, so that re-running that cell at restore time draws the same numbers
(prior-art §8.7). numpy is only looked at when the user has already imported it: importing it
ourselves would cost the user ~100 ms and memory they did not ask for.

The Mersenne Twister words are stored as base64 of little-endian uint32 (3.3 kB per generator
instead of ~7 kB of JSON integers), which keeps long histories small.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
import sys
from typing import Any

#: (random.getstate(), numpy legacy state dict or None, torch's CPU generator state bytes or
#: None, ((name, getstate()) of each library generator loaded, `_LIBRARY_GENERATORS`) or None)
RawState = tuple[Any, ...]

#: ``random.Random`` instances libraries keep as module globals, seeded from OS entropy when
#: imported, that they draw from without being asked: (module, attribute). sympy shuffles the
#: order in which it deduces assumptions (``x.is_real``) with ``_assumptions_rng``, so the
#: facts each symbol caches and their order differed between a cell and its re-run, and every
#: sympy value a restore recomputed said "value differs". Their state is taken before each
#: cell that draws from them, as `random`'s is, and set again before its re-run.
_LIBRARY_GENERATORS: tuple[tuple[str, str], ...] = (
    ("sympy.core.random", "_assumptions_rng"),
    ("sympy.core.random", "rng"),
)


def _library_generators() -> tuple[tuple[str, random.Random], ...]:
    """The library generators of `_LIBRARY_GENERATORS` whose module is imported: a few dict
    lookups."""
    out = []
    for module, attr in _LIBRARY_GENERATORS:
        mod = sys.modules.get(module)
        gen = getattr(mod, attr, None) if mod is not None else None
        if type(gen) is random.Random:
            out.append((f"{module}.{attr}", gen))
    return tuple(out)


def _torch_state() -> bytes | None:
    """torch's default CPU generator state (what ``torch.randn`` draws from), if torch is
    imported: 5 kB, read in a few us."""
    torch = sys.modules.get("torch")
    gen = getattr(torch, "default_generator", None) if torch is not None else None
    if gen is None:
        return None
    try:
        return gen.get_state().numpy().tobytes()
    except Exception:  # noqa: BLE001 - a half-imported torch: no torch state
        return None


def torch_import_state() -> bytes | None:
    """The state torch's default CPU generator had when torch was imported (or last seeded):
    torch seeds it from OS entropy in every process (``torch.initial_seed()`` differs between
    two), so a cell that imports torch and draws (``nn.Linear(4, 2)`` initialising its weights)
    drew from a state no earlier cell saw. It is the generator seeded with that seed again,
    made on a new generator (the default one is left as it is). None without torch."""
    torch = sys.modules.get("torch")
    if torch is None or getattr(torch, "default_generator", None) is None:
        return None
    try:
        gen = torch.Generator()
        gen.manual_seed(torch.initial_seed())
        return gen.get_state().numpy().tobytes()
    except Exception:  # noqa: BLE001 - a half-imported torch: no torch state
        return None


def _pack_words(words: Any) -> str:
    data = struct.pack(f"<{len(words)}I", *words)
    return base64.b64encode(data).decode("ascii")


def _unpack_words(text: str) -> tuple[int, ...]:
    data = base64.b64decode(text)
    return struct.unpack(f"<{len(data) // 4}I", data)


def raw_state() -> RawState:
    """The generators' state as Python objects, cheaply (no conversion): for change checks."""
    np = sys.modules.get("numpy")
    np_state = None
    if np is not None:
        try:
            np_state = np.random.get_state(legacy=False)
        except Exception:  # noqa: BLE001 - a half-imported or exotic numpy: no numpy state
            np_state = None
    libs = tuple((name, gen.getstate()) for name, gen in _library_generators()) or None
    return random.getstate(), np_state, _torch_state(), libs


_HEADER = object.__basicsize__  # reference count and type: change without any draw


def _view(obj: Any, base: type) -> Any:
    """A ctypes view of the memory of C object `obj` past its header, as far as `base`'s
    layout goes: for the generators, their whole state."""
    import ctypes

    return (ctypes.c_char * (base.__basicsize__ - _HEADER)).from_address(id(obj) + _HEADER)


#: the generators `fingerprint` last read, and views of their memory. Making a view is an
#: audited ctypes call and an `id()` (each an event the agent's own audit hook sees); reading
#: one is a copy of its bytes. The generators are held, so the memory stays theirs.
_views: tuple[Any, Any, Any, tuple[Any, ...], tuple[Any, ...]] | None = None


def fingerprint() -> bytes | None:
    """The generators' C state as raw bytes (plus `random`'s cached gauss), a few us where
    `raw_state` costs about 100: equal fingerprints mean no draw happened in between, so the
    monitor skips the full states. A different one is not always a draw (numpy caches its
    ctypes interface in the generator), so it only sends the monitor to `raw_state`.
    None where the layout is not CPython's."""
    global _views
    if sys.implementation.name != "cpython":
        return None
    try:
        import _random
        import marshal

        inst = random._inst  # type: ignore[attr-defined]
        if type(inst) is not random.Random:
            return None
        np_random = sys.modules.get("numpy.random")
        rs = bits = None
        if np_random is not None:
            rs = np_random.mtrand._rand
            bits = rs._bit_generator
        libs = tuple(gen for _, gen in _library_generators())
        seen = _views
        if (seen is None or seen[0] is not inst or seen[1] is not rs or seen[2] is not bits
                or len(seen[4]) != len(libs) or any(a is not b for a, b in zip(seen[4], libs, strict=True))):
            views = [_view(inst, _random.Random)]
            if rs is not None:
                views += [_view(rs, type(rs)), _view(bits, type(bits))]
            views += [_view(gen, _random.Random) for gen in libs]
            seen = _views = (inst, rs, bits, tuple(views), libs)
        parts = [v.raw for v in seen[3]]
        parts.append(marshal.dumps(vars(inst).get("gauss_next"), 2))
        parts += [marshal.dumps(vars(gen).get("gauss_next"), 2) for gen in libs]
        if rs is None:
            parts.append(b"-")
        parts.append(_torch_state() or b"-")
        return b"".join(parts)
    except Exception:  # noqa: BLE001 - unknown layout: always take the full states
        return None


def raw_equal(a: RawState, b: RawState) -> bool:
    """Whether two raw states are the same (so the cell in between drew nothing)."""
    if a[0] != b[0]:
        return False
    ta, tb = (a[2] if len(a) > 2 else None), (b[2] if len(b) > 2 else None)
    if ta is not None and tb is not None and ta != tb:
        # (torch imported by the cell: `a` has no torch state; the monitor gives it the one
        # torch started from, `torch_import_state`, when the cell drew from it)
        return False
    if (a[3] if len(a) > 3 else None) != (b[3] if len(b) > 3 else None):
        return False
    na, nb = a[1], b[1]
    if na is None or nb is None:
        return na is nb
    try:
        return (
            na["bit_generator"] == nb["bit_generator"]
            and na["state"]["pos"] == nb["state"]["pos"]
            and na["has_gauss"] == nb["has_gauss"]
            and na["gauss"] == nb["gauss"]
            and bool((na["state"]["key"] == nb["state"]["key"]).all())
        )
    except Exception:  # noqa: BLE001 - unexpected layout: assume it changed
        return False


def to_json(raw: RawState) -> dict:
    """Convert a raw state to the JSON-safe form `apply` accepts."""
    version, words, gauss = raw[0]
    out: dict[str, Any] = {"random": {"version": version, "words": _pack_words(words), "gauss": gauss}}
    np_state = raw[1]
    if np_state is not None and np_state.get("bit_generator") == "MT19937":
        out["numpy"] = {
            "bit_generator": "MT19937",
            "key": _pack_words(np_state["state"]["key"].tolist()),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        }
    if len(raw) > 2 and raw[2] is not None:
        out["torch"] = base64.b64encode(raw[2]).decode("ascii")
    if len(raw) > 3 and raw[3]:
        out["library"] = {name: {"version": v, "words": _pack_words(words), "gauss": gauss}
                          for name, (v, words, gauss) in raw[3]}
    return out


def capture() -> dict:
    """JSON-safe state of `random` and (if already imported) `numpy.random`'s global generator."""
    return to_json(raw_state())


def state_key(state: dict) -> str:
    """Content hash of a JSON state: the key under which `HistoryGraph.rng_states` stores it."""
    blob = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def apply(state: dict) -> None:
    """Set the global generators to a state made by `capture` (numpy is imported if needed)."""
    r = state.get("random")
    if r:
        random.setstate((int(r["version"]), _unpack_words(r["words"]), r.get("gauss")))
    n = state.get("numpy")
    if n:
        import numpy as np

        key = np.array(_unpack_words(n["key"]), dtype=np.uint32)
        np.random.set_state(("MT19937", key, int(n["pos"]), int(n["has_gauss"]), float(n["gauss"])))
    libs = state.get("library")
    if libs:
        present = dict(_library_generators())  # (never imported here: a later re-run does)
        for name, g in libs.items():
            gen = present.get(name)
            if gen is not None:
                gen.setstate((int(g["version"]), _unpack_words(g["words"]), g.get("gauss")))
    t = state.get("torch")
    if t:
        import torch

        torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(t)), dtype=torch.uint8))
