"""Worker processes die with the process that started them, also when it is killed -9."""

import os
import signal
import subprocess
import sys
import time

import pytest

PARENT = """
import os, sys, time
from tripletface.workers import worker_pool
pool = worker_pool(2, sys.argv[1])
pids = {pool.submit(os.getpid).result() for _ in range(8)}
print(" ".join(map(str, sorted(pids))), flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited, its parent not yet reaped it
        return stat.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_workers_exit_when_their_parent_is_killed_9(start):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, start], stdout=subprocess.PIPE)
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert workers  # spawn starts workers as work needs them
    deadline = time.monotonic() + 10
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(_alive, workers))
