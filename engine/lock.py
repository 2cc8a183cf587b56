"""One writer per output folder: `describe` holds an advisory lock on OUT/.tarsier.lock while it runs.

Two runs appending to one descriptions.jsonl would each describe every clip (neither sees the
other's records in time), so the second one stops at once, naming the first. The lock is
fcntl.flock on an open file: the kernel drops it when the holder's process ends however it ends
(a kill -9 included), so a stale lock file never blocks the next run. The file keeps the holder's
pid, host and command for the message. On systems without fcntl (Windows) there is no lock.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path

LOCK_NAME = ".tarsier.lock"


class OutputBusy(ValueError):
    """Another process is writing into this output folder (a usage error: nothing was done)."""


class OutputLock:
    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:   # no flock on this platform: run unlocked
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read(fd)
            os.close(fd)
            raise OutputBusy(f"{self.path.parent} is in use by another describe run ({holder}); "
                             "wait for it, or write into another folder") from None
        os.ftruncate(fd, 0)
        cmd = " ".join(sys.argv)[:200]
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}: {cmd}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)   # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        self.release()


def _read(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 400).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike | None):
    """Hold the lock of the output folder (if there is one) while inside, whatever way it is left."""
    if folder is None:
        yield
        return
    with OutputLock(folder):
        yield
