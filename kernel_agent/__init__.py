"""ElasticSpawner's in-kernel agent: monitors cell executions and checkpoints/restores the session.

Runs inside the user's ipykernel process (and, for `kernel_agent.server`, inside the single-user
Jupyter server). Never imports jupyterhub or kubernetes.

    %load_ext kernel_agent
    import kernel_agent
    kernel_agent.checkpoint("file:///abs/dir")   # or "s3://bucket/prefix"
    kernel_agent.restore("file:///abs/dir")      # in a fresh kernel
    kernel_agent.background("file:///abs/dir", interval=30)  # background checkpoints (0: off)
"""

from __future__ import annotations

from typing import Any

# The engine lives in `checkpointing` and `restoring`, not in modules named `checkpoint` and
# `restore`: importing a submodule binds it as an attribute of this package, which would replace
# the public functions below after their first call. Likewise `backgrounding`, not `background`.

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    from kernel_agent.extension import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from kernel_agent.extension import unload_ipython_extension as _unload

    _unload(ipython)


def checkpoint(url: str, **options: Any) -> dict:
    """Checkpoint this kernel's session to `url`; see `kernel_agent.checkpointing.checkpoint`."""
    from kernel_agent.checkpointing import checkpoint as _checkpoint

    return _checkpoint(url, **options)


def restore(url: str, **options: Any) -> dict:
    """Restore a checkpointed session into this (fresh) kernel; see `kernel_agent.restoring.restore`."""
    from kernel_agent.restoring import restore as _restore

    return _restore(url, **options)


def background(url: str | None = None, interval: float | None = None, **options: Any) -> dict:
    """Background incremental checkpoints on/off; see `kernel_agent.backgrounding.background`."""
    from kernel_agent.backgrounding import background as _background

    return _background(url, interval, **options)


def background_status() -> dict:
    """Status of this kernel's background checkpoints (rounds, bytes, last error)."""
    from kernel_agent.backgrounding import status as _status

    return _status()
