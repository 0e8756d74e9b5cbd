"""A worker plugin that lets LocalCluster workers shut down cleanly instead of being killed.

After its worker has closed, a worker process would go through the interpreter's teardown of every
object: seconds for torch and a model on a loaded machine, more than the 4 s a Dask nanny waits before it
kills the process and logs "Worker process still alive after 4.0 seconds, killing". With this plugin the
process ends right after its exit handlers (multiprocessing's, which stops the decode children,
included), with status 0, as multiprocessing's own forked children end. Only objects' destructors are
skipped, and nothing of ours is left to write by then: every shard is committed before its task returns.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys

from distributed.diagnostics.plugin import WorkerPlugin


class QuickExit(WorkerPlugin):
    """On worker close, arm :func:`exit_after_handlers` to end the process once the worker is gone."""

    def teardown(self, worker) -> None:
        atexit.register(exit_after_handlers)  # registered last, so it runs first, then runs the rest


def exit_after_handlers() -> None:
    """Run every other exit handler as a normal exit would, flush the standard streams, exit with 0."""
    atexit.unregister(exit_after_handlers)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(0)
