"""Configuration objects of libraries that a variable may alias: the process's, not the notebook's.

``from matplotlib import rcParams`` (or ``rc = plt.rcParams``) binds matplotlib's one
configuration dict, and ``rcParams['figure.figsize'] = (10, 6)`` configures every later plot.
Shipped as a copy, the variable came back detached from matplotlib after a restore, and
verified, its content being equal: ``rcParams['lines.linewidth'] = 3`` in the restored session
no longer changed a plot, and what the notebook had set was not set in the new process. Like
``os.environ`` and the decimal context (`serialize._process_objects`), such an object comes
back as the restoring process's own (pickled by reference), the digest names it instead of
walking its content (`changes._Walker`), and its content is process state (`procstate`) that a
restore brings back by re-running the cells that set it: a cell that reads nothing but modules
and such objects is a process-state cell (`checkpointing.process_state_cells`).

Looked up by identity, only in modules already imported (never importing a library here).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

#: (module, attribute) of the objects; the module is the one that defines the object, so the
#: lookup finds it whatever alias the notebook imported it under (``plt.rcParams``, ``pylab``)
LIBRARY_OBJECTS: tuple[tuple[str, str], ...] = (
    ("matplotlib", "rcParams"),
    ("pandas._config.config", "options"),  # ``pd.options``
    # ``gen = torch.manual_seed(0)`` returns it: its state is the global generators' state,
    # which the restore sets itself (`rng`); a copy drew apart from ``torch.rand``
    ("torch", "default_generator"),
)


def by_id() -> dict[int, str]:
    """id -> ``module.attribute`` of those objects whose library is imported. A few dict
    lookups: cheap enough for every digest and pickler."""
    found: dict[int, str] = {}
    for modname, attr in LIBRARY_OBJECTS:
        mod = sys.modules.get(modname)
        if mod is None:
            continue
        try:
            obj = vars(mod).get(attr)
        except TypeError:  # (a module replaced by an object without a namespace)
            continue
        if obj is not None:
            found[id(obj)] = f"{modname}.{attr}"
    return found


def is_library_object(value: Any) -> bool:
    """Whether `value` is one of those objects (see `by_id`)."""
    return id(value) in by_id()


def load(qualname: str) -> Any:
    """The loading process's object named `qualname` (``module.attribute``), for unpickling."""
    modname, _, attr = qualname.rpartition(".")
    return getattr(importlib.import_module(modname), attr)
