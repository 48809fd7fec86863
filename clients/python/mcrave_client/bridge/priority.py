"""CPU priority for the threads that keep time (the bridge's OSC pacer, a bench's receiver).

On a busy machine a woken thread of normal priority can wait milliseconds for a core, which a
receiver hears as jitter. Measured (bench/bridge_bench.py, 2 cores shared with both services and
4 load streams): the pacer's own send jitter p99 2.9-3.5 ms at niceness -10, 0.1 ms under
SCHED_FIFO. Audio software asks for the same (JACK, Max's audio thread): a real-time policy when
permitted (root, CAP_SYS_NICE or an RLIMIT_RTPRIO), else a lower niceness, else nothing.
"""

from __future__ import annotations

import os

# low in the real-time range (1-99): above every normal thread, below the kernel's own RT work
REALTIME_PRIORITY = 10
NICENESS = -10


def raise_priority(pid: int = 0) -> str:
    """Best effort, for one thread (a native thread id) or process (`pid`; 0 = the caller):
    returns "realtime" (SCHED_FIFO), "nice" (niceness -10) or "" (not permitted / no Linux)."""
    try:
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
        return "realtime"
    except (OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, pid, NICENESS)
        return "nice"
    except (OSError, AttributeError):
        return ""
