"""A run lease on a store: one extraction run writes a store at a time; a second one refuses clearly.

The lease is a file holding pid, host and start time; a background thread touches it so a lease whose
owner died (pid gone on this host, or no heartbeat for ``stale_after_s`` from any host) is recognised as
stale and taken over. Checking the holder and writing the new lease happen under an exclusive ``flock``
of ``STORE/.lease.lock``, so of many processes that find the same stale lease exactly one takes it over
(without the lock, two could each remove "the stale lease", one of them the other's fresh one). The
kernel drops the lock when its holder dies, so the lock itself never goes stale. Shard writes need no
lock (unique names).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from pipeline.errors import UserError
from pipeline.store.shard import atomic_write

LEASE_FILE = ".lease"
LOCK_FILE = ".lease.lock"
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # file systems without flock support


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if absent) for a short critical section."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            if err.errno not in _NO_LOCKS:
                raise
        yield
    finally:
        os.close(fd)  # releases the lock


def held_here(store_path: str | Path) -> bool:
    """Whether this process holds the store's lease (what merging or compacting its index requires)."""
    try:
        holder = json.loads((Path(store_path) / LEASE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(holder, dict) and (holder.get("pid"), holder.get("host")) == (
        os.getpid(),
        socket.gethostname(),
    )


class StoreBusy(UserError):
    """Another live run holds the store's lease."""


class StoreLease:
    """Context manager holding ``STORE/.lease`` for the duration of a run."""

    def __init__(self, store_path: str | Path, *, stale_after_s: float = 300.0, heartbeat_s: float = 30.0):
        self.path = Path(store_path) / LEASE_FILE
        self.lock_path = Path(store_path) / LOCK_FILE
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}

    def acquire(self) -> None:
        with file_lock(self.lock_path):
            holder = self._holder()
            if holder is not None and not self._is_stale(holder):
                raise StoreBusy(
                    f"{self.path.parent}: another run is writing this store "
                    f"(pid {holder.get('pid')} on {holder.get('host')}, since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', 0)))}); "
                    f"wait for it to finish, or delete {self.path} if that run is certainly dead"
                )
            text = json.dumps(self.owner).encode()
            atomic_write(self.path, lambda handle: handle.write(text))
        self._thread = threading.Thread(target=self._heartbeat, name="store-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with file_lock(self.lock_path):
            if self._holder() == self.owner:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> StoreLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def _holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # garbage: judged by its age

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        pid = holder.get("pid")
        if holder.get("host") == socket.gethostname() and isinstance(pid, int):
            try:  # a pid reused by a process started after the lease is not the holder
                return psutil.Process(pid).create_time() > float(holder.get("started", 0)) + 1.0
            except psutil.NoSuchProcess:
                return True
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > self.stale_after_s
