"""The processes of this machine: how many cores a run may use, whether the process that left a file
behind is still running, and a worker that ends with its parent.

A run names after itself the files it keeps while it works: its staging folders
(``results/.<method>.next-<tag>``, :mod:`replikit.results`), its executed notebook
(``logs/<method>.running-<tag>.ipynb``, :mod:`replikit.runner`) and its entry among a run store's users
(``.users/<tag>``, :mod:`replikit.resume`). A killed run leaves them behind, and its pid may later be
given to an unrelated process, so a pid alone cannot tell whether the owner lives. The :func:`tag` is the
pid and the process's start time, and :func:`owner_alive` checks both.
"""

from __future__ import annotations

import os
import threading
import time

# The start time is the clock's boot time plus the ticks since boot, and the clock's boot time moves
# when NTP adjusts the clock (psutil documents it), so two readings of one process may differ by a
# second. A new process given a dead one's pid starts after it died, which is never within seconds
# of its start: the pids would have to wrap around first.
_SAME_START_S = 2.0


def cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS has one, else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _started(pid: int) -> float | None:
    """When process ``pid`` started; None if there is none. Raises psutil.AccessDenied for a process
    whose start time this user may not read (another user's, where the OS hides them)."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def tag(pid: int | None = None) -> str:
    """``<pid>-<start time>`` of process ``pid`` (default: this one), to name what it leaves behind."""
    pid = os.getpid() if pid is None else pid
    started = _started(pid)
    if started is None:
        raise ProcessLookupError(f"no process {pid}")
    return f"{pid}-{started:.2f}"


def tag_pid(tag: str) -> int | None:
    """The pid a :func:`tag` names (None if it is not a tag). A bare pid, as older versions wrote, counts."""
    pid = tag.partition("-")[0]
    return int(pid) if pid.isdigit() else None


def owner_alive(tag: str) -> bool:
    """Whether the process a :func:`tag` names is running, and is that process rather than a later one
    given the same pid. Of a bare pid, or of a process whose start time is hidden from this user, only the
    first can be known: such a file is left alone while its pid runs."""
    import psutil

    pid = tag_pid(tag)
    if pid is None:
        return False
    try:
        started = _started(pid)
    except psutil.AccessDenied:
        return True
    if started is None:
        return False
    stamp = tag.partition("-")[2]
    try:
        return not stamp or abs(started - float(stamp)) < _SAME_START_S
    except ValueError:
        return False


def exit_with(parent: int, every_s: float = 1.0) -> threading.Thread:
    """End this process once ``parent`` is gone (checked every ``every_s`` seconds, in a daemon thread).

    A pool's workers are stopped by their parent's exit handlers, which a SIGKILL never runs: the workers
    would train on for nobody, holding cores and memory. A process whose parent dies is given another
    (init, or a subreaper), so a changed parent pid means the parent is gone. The worker exits at once
    (``os._exit``): whatever it was writing is lost, and everything it writes is written atomically.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="replikit-exit-with-parent", daemon=True)
    thread.start()
    return thread
