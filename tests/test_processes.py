"""Telling a live owner of a leftover file from a dead one, whose pid a later process may hold."""

import os
import subprocess
import sys

import pytest

from replikit import processes


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # its pid is free now (reused only after the kernel's pid range wraps)
    return proc.pid


def test_cores_is_what_this_process_may_use():
    assert 1 <= processes.cores() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert processes.cores() == len(os.sched_getaffinity(0))


def test_a_tag_names_a_live_process_and_only_that_one():
    mine, parent = processes.tag(), processes.tag(os.getppid())
    assert processes.tag_pid(mine) == os.getpid() and processes.tag_pid(parent) == os.getppid()
    assert processes.owner_alive(mine) and processes.owner_alive(parent)
    pid, _, started = parent.partition("-")
    # the same pid, started long before or after: a later process given a dead one's pid
    assert not processes.owner_alive(f"{pid}-{float(started) - 3600:.2f}")
    assert not processes.owner_alive(f"{pid}-{float(started) + 60:.2f}")
    # the clock's boot time moves by a second when NTP adjusts the clock: still the same process
    assert processes.owner_alive(f"{pid}-{float(started) + 1:.2f}")
    assert not processes.owner_alive(f"{dead_pid()}-{started}")


def test_older_names_and_garbage():
    assert processes.owner_alive(str(os.getppid()))  # an older version's name: the pid alone
    assert not processes.owner_alive(str(dead_pid()))
    for junk in ("", "x", "-1", f"{os.getppid()}-soon"):
        assert not processes.owner_alive(junk)
        assert processes.tag_pid(junk) is None or junk.endswith("soon")
    with pytest.raises(ProcessLookupError):
        processes.tag(dead_pid())


def test_a_process_whose_start_time_is_hidden_is_left_alone(monkeypatch):
    """Another user's live process, where the OS hides its details: its files stay (as a bare pid's)."""
    import psutil

    def hidden(pid):
        raise psutil.AccessDenied(pid)

    monkeypatch.setattr(processes, "_started", hidden)
    assert processes.owner_alive(f"{os.getppid()}-1000.00")


def _gone_within(pids: list[int], seconds: float) -> bool:
    import time

    import psutil

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            return True
        time.sleep(0.2)
    return False


def test_pool_workers_end_with_a_killed_parent():
    """SIGKILL runs no exit handler, so a killed kernel cannot stop its pool: the workers stop themselves."""
    import signal

    code = (
        "import time\n"
        "from replikit import train\n"
        "pool = train._pool(2)\n"
        "futures = [pool.submit(time.sleep, 120) for _ in range(2)]\n"
        "time.sleep(0.5)\n"
        "while len(pool._processes) < 2: time.sleep(0.1)\n"
        "print(*pool._processes, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(processes.owner_alive(str(p)) for p in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _gone_within(workers, 10), "a killed parent's workers are still running"
    finally:
        parent.kill()
