"""kernel_agent.procstate: process-wide state a cell can change without binding a variable."""

from __future__ import annotations

import decimal
import os
import signal
import sys
import warnings

import pytest

from kernel_agent import procstate


@pytest.fixture
def restore_process():
    env, path, filters = dict(os.environ), list(sys.path), list(warnings.filters)
    prec = decimal.getcontext().prec
    yield
    os.environ.clear()
    os.environ.update(env)
    sys.path[:] = path
    warnings.filters[:] = filters
    decimal.getcontext().prec = prec


CHANGES = {
    "environment": lambda: os.environ.__setitem__("ELASTIC_PROCSTATE", "1"),
    "sys.path": lambda: sys.path.insert(0, "/elastic/procstate"),
    "warnings filter": lambda: warnings.filterwarnings("ignore", message="elastic-procstate"),
    "decimal context": lambda: setattr(decimal.getcontext(), "prec", 51),
    "recursion limit": lambda: sys.setrecursionlimit(sys.getrecursionlimit() + 1),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_of_process_state_is_seen(change, restore_process):
    before = procstate.snapshot()
    limit = sys.getrecursionlimit()
    try:
        CHANGES[change]()
        assert before.differs(procstate.snapshot())
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize("handler", ["function", "SIG_IGN"])
def test_a_signal_handler_installed_or_ignored_is_process_state(handler):
    """Handlers are compared by identity, read raw (SIG_IGN is the small int 1, SIG_DFL 0):
    a handler the notebook installs, and a signal it ignores, both show."""
    before_handler = signal.getsignal(signal.SIGUSR2)
    before = procstate.snapshot()
    try:
        signal.signal(signal.SIGUSR2, (lambda *a: None) if handler == "function" else signal.SIG_IGN)
        assert before.differs(procstate.snapshot())
        assert not procstate.snapshot().differs(procstate.snapshot())
    finally:
        signal.signal(signal.SIGUSR2, before_handler)


@pytest.mark.parametrize("change", ["seterr", "set_printoptions"])
def test_numpy_error_handling_and_print_options_are_process_state(change):
    np = pytest.importorskip("numpy")
    err, opts = np.geterr(), np.get_printoptions()
    before = procstate.snapshot()
    try:
        if change == "seterr":
            np.seterr(divide="raise")
        else:
            np.set_printoptions(precision=3)
        assert before.differs(procstate.snapshot())
    finally:
        np.seterr(**err)
        np.set_printoptions(**opts)


@pytest.mark.parametrize("change", ["grad mode", "print options"])
def test_torchs_grad_mode_and_print_options_are_process_state(change):
    """`torch.set_grad_enabled(False)` as a statement holds for every later cell (their tensors
    get no graph), as do `torch.set_printoptions(...)`: a cell making either next to an
    assignment must be one a restore re-runs (or whose setting it carries)."""
    torch = pytest.importorskip("torch")
    before = procstate.snapshot()
    try:
        if change == "grad mode":
            torch.set_grad_enabled(False)
        else:
            torch.set_printoptions(precision=2)
        assert before.differs(procstate.snapshot())
    finally:
        torch.set_grad_enabled(True)
        torch.set_printoptions(profile="default")


def test_options_a_context_manager_set_and_put_back_are_no_change():
    np = pytest.importorskip("numpy")
    before = procstate.snapshot()
    with np.errstate(all="ignore"), np.printoptions(precision=2), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert before.differs(procstate.snapshot())
    assert not before.differs(procstate.snapshot())


def test_library_options_are_seen_even_when_a_new_value_could_reuse_an_old_id():
    pd = pytest.importorskip("pandas")
    old = pd.get_option("display.max_rows")
    try:
        pd.set_option("display.max_rows", 1001)
        before = procstate.snapshot()  # holds 1001, so 1002 cannot take its address
        pd.set_option("display.max_rows", 1002)
        assert before.differs(procstate.snapshot())
    finally:
        pd.set_option("display.max_rows", old)


def test_nothing_changed_is_no_change():
    before = procstate.snapshot()
    x = [i for i in range(10)]  # noqa: F841 - a cell that only computes
    assert not before.differs(procstate.snapshot())


def test_a_library_imported_meanwhile_is_no_change():
    before = procstate.snapshot()
    before.parts["_pandas"] = None  # as if pandas were imported by the cell
    later = procstate.snapshot()
    later.parts["_pandas"] = ("registered", "options")
    assert not before.differs(later)


def test_a_cell_of_imports_only_is_told_apart():
    assert procstate.only_imports("import os\nfrom collections import deque as dq")
    assert not procstate.only_imports("import os\nos.environ['K'] = '1'")
    assert not procstate.only_imports("%matplotlib inline")
    assert not procstate.only_imports("")


def test_a_name_put_into_builtins_is_a_change():
    import builtins

    before = procstate.snapshot()
    builtins.elastic_procstate_helper = len
    try:
        assert before.differs(procstate.snapshot())
    finally:
        del builtins.elastic_procstate_helper


def test_logging_configuration_is_process_state():
    import logging

    lg = logging.getLogger("elastic.procstate.cfg")
    level, handlers = lg.level, list(lg.handlers)
    try:
        before = procstate.snapshot()
        lg.setLevel(logging.DEBUG)
        assert before.differs(procstate.snapshot())
        before = procstate.snapshot()
        lg.addHandler(logging.StreamHandler())
        assert before.differs(procstate.snapshot())
    finally:
        lg.setLevel(level)
        lg.handlers[:] = handlers


def test_a_logger_made_and_configured_in_the_same_cell_is_a_change():
    import logging

    before = procstate.snapshot()
    lg = logging.getLogger("elastic.procstate.fresh")
    lg.setLevel(logging.INFO)
    try:
        assert before.differs(procstate.snapshot())
    finally:
        lg.setLevel(logging.NOTSET)


def test_a_library_making_its_own_logger_with_a_null_handler_is_no_change():
    import logging

    before = procstate.snapshot()
    lg = logging.getLogger("elastic.procstate.library")
    lg.addHandler(logging.NullHandler())  # what libraries do when imported
    assert not before.differs(procstate.snapshot())


def test_builtins_are_compared_by_identity_whatever_their_order():
    import builtins

    saved = builtins.abs
    before = procstate.snapshot()
    try:
        del builtins.abs  # back at the end of the dict: the same objects in another order
        builtins.abs = saved
        assert not before.differs(procstate.snapshot())
        builtins.abs = lambda x: x  # an equal name, another object
        assert before.differs(procstate.snapshot())
    finally:
        builtins.abs = saved


def _logger_changes(lg):
    import logging

    handler = logging.StreamHandler()
    return {
        "handler added": lambda: lg.addHandler(handler),
        "filter added": lambda: lg.addFilter(logging.Filter("elastic")),
        "propagation off": lambda: setattr(lg, "propagate", False),
        "level": lambda: lg.setLevel(logging.ERROR),
        "disabled": lambda: setattr(lg, "disabled", True),
    }


@pytest.mark.parametrize("change", sorted(_logger_changes(None)))
def test_a_logger_change_after_readings_that_were_reused_is_seen(change):
    """Snapshots reuse the last reading while no tag moved: the reuse must not hide what
    comes after it (handlers and filters change in place, without any tag moving)."""
    import logging

    lg = logging.getLogger("elastic.procstate.reused")
    lg.addHandler(logging.StreamHandler())  # configured: not a library's default logger
    try:
        before = procstate.snapshot()
        assert not before.differs(procstate.snapshot())  # (the second reading is reused)
        _logger_changes(lg)[change]()
        assert before.differs(procstate.snapshot())
    finally:
        lg.handlers.clear()
        lg.filters.clear()
        lg.propagate, lg.disabled = True, False
        lg.setLevel(logging.NOTSET)


def test_an_environment_change_after_a_reused_reading_is_seen(restore_process):
    before = procstate.snapshot()
    assert not before.differs(procstate.snapshot())
    os.environ["ELASTIC_PROCSTATE_REUSED"] = "1"
    assert before.differs(procstate.snapshot())
    later = procstate.snapshot()
    del os.environ["ELASTIC_PROCSTATE_REUSED"]
    assert later.differs(procstate.snapshot())


def test_a_pandas_accessor_registered_after_a_reused_reading_is_seen():
    pd = pytest.importorskip("pandas")
    before = procstate.snapshot()
    assert not before.differs(procstate.snapshot())

    @pd.api.extensions.register_series_accessor("elastic_procstate")
    class Accessor:
        def __init__(self, obj):
            self.obj = obj

    try:
        assert before.differs(procstate.snapshot())
    finally:
        delattr(pd.Series, "elastic_procstate")
        pd.Series._accessors.discard("elastic_procstate")
