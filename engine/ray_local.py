"""Starting or joining Ray for `describe --engine ray`, kept apart from the engine so it can be tested alone.

A Ray started here is for this machine only: its servers (GCS, raylet, workers, object manager)
listen on the loopback interface, not on the machine's network address, and there is no
dashboard. Ray picks the node address itself: `_node_ip_address="127.0.0.1"` is replaced by the
machine's address (ray._private.services.resolve_ip_for_localhost); what makes it choose loopback
is RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (Ray's own single-machine mode on macOS and Windows), read by
this process when it picks the address and by the Ray processes it starts. Both are set only while
the instance starts, so joining a real cluster later in the same process is not affected.
`quiet` keeps Ray's own log lines off the terminal: the Python loggers' (start-up, Ray Data's
progress and execution lines; RAY_DATA_LOG_LEVEL, because Ray Data sets its loggers up again on
its own) and, with `native_stderr_to`, what Ray's C++ core writes straight to file descriptor 2
(actor warnings such as "constructor arguments in the object store"), which no logger controls.
"""
from __future__ import annotations

import contextlib
import logging
import os

_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_RAY_LOGGERS = ("ray", "ray.data", "ray.serve", "ray.train", "ray.tune")


def init_ray(ray, address: str | None, quiet: bool = False, **kwargs) -> bool:
    """Connect to `address`, or start a local loopback-only instance; True when it was started here
    (the caller shuts it down)."""
    level = logging.ERROR if quiet else logging.WARNING
    if quiet:
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=level, **kwargs)
        _quiet(quiet)
        return False
    from ray._private import ray_constants

    before_env = os.environ.get(_LOOPBACK_ENV)
    before = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False   # this process read the variable when it imported Ray
    try:
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=level, **kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(_LOOPBACK_ENV, None)
        else:
            os.environ[_LOOPBACK_ENV] = before_env
    _quiet(quiet)
    return True


@contextlib.contextmanager
def native_stderr_to(path: str | os.PathLike):
    """While inside: file descriptor 2 (what C++ code and the Ray processes started here write to)
    goes to `path`, while Python's sys.stderr (our own one-line errors) still reaches the terminal."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):   # no real stderr (a test runner's capture)
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 2)
    os.close(log)
    before = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, errors="backslashreplace")
    try:
        yield
    finally:
        ours, sys.stderr = sys.stderr, before
        with contextlib.suppress(OSError):
            ours.close()
        os.dup2(saved, 2)
        os.close(saved)


def _quiet(quiet: bool) -> None:
    if not quiet:
        return
    for name in _RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.suppress(Exception):   # Ray Data's own console output (progress, hints)
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
