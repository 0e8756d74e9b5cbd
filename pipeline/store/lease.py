"""A run lease on a store: one extraction run writes a store at a time; a second one refuses clearly.

The lease is a file created with O_EXCL holding pid, host and start time; a background thread touches
it so a lease whose owner died (pid gone on this host, or no heartbeat for ``stale_after_s`` from any
host) is recognised as stale and taken over. Shard writes themselves need no lock (unique names).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from pipeline.errors import UserError

LEASE_FILE = ".lease"


class StoreBusy(UserError):
    """Another live run holds the store's lease."""


class StoreLease:
    """Context manager holding ``STORE/.lease`` for the duration of a run."""

    def __init__(self, store_path: str | Path, *, stale_after_s: float = 300.0, heartbeat_s: float = 30.0):
        self.path = Path(store_path) / LEASE_FILE
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}

    def acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not self._is_stale(holder):
                    raise StoreBusy(
                        f"{self.path.parent}: another run is writing this store "
                        f"(pid {holder.get('pid')} on {holder.get('host')}, since "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', 0)))}); "
                        f"wait for it to finish, or delete {self.path} if that run is certainly dead"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(self.owner, handle)
            self._thread = threading.Thread(target=self._heartbeat, name="store-lease", daemon=True)
            self._thread.start()
            return
        raise StoreBusy(f"{self.path}: could not take the lease (another run took it at the same moment)")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
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
        except (OSError, json.JSONDecodeError):
            return {}  # being written right now, or garbage: judged by its age

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not psutil.pid_exists(holder["pid"])
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > self.stale_after_s
