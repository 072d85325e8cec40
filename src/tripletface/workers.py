"""Worker processes that die with the process that started them, also when it is killed -9.

Every tripletface pipeline that starts processes (detection in ``FaceStream``, the chip cache,
video, the service, the demo) takes them from ``worker_pool``, so that none is left behind.
"""

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

# How often a worker checks that the process that started it is still alive (seconds).
_PARENT_POLL = 0.5


def worker_pool(workers: int, start: str = "fork") -> ProcessPoolExecutor:
    """``workers`` processes (forked, or started as ``start`` says: "spawn") that exit by
    themselves when the process that made them dies.

    Workers inherit ends of the pool's pipes (forked ones both), so a parent killed with SIGKILL
    never closes them and the workers would wait for work forever. The pool starts all its
    workers at the first ``submit``: make it from a thread that lives as long as the pool (the
    main one), since Linux sends the parent-death signal when the starting *thread* ends.
    """
    return ProcessPoolExecutor(
        workers, mp.get_context(start), initializer=_follow_parent, initargs=(os.getpid(),)
    )


def _follow_parent(parent: int) -> None:
    """In a worker: die with ``parent``. Linux's parent-death signal stops even a detection
    holding the GIL; a watcher thread covers other systems (and the signal's race with fork)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL)
    os._exit(1)
