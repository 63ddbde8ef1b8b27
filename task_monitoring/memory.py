"""Per-attempt peak memory of the current process, measured by the kernel.

Method (Linux): before an attempt, write ``5`` to ``/proc/self/clear_refs``, which resets the
process's peak resident set size (``VmHWM`` in ``/proc/self/status``) to its current resident
size; after the attempt, ``VmHWM`` is the highest resident size the process reached during the
attempt. With Celery's prefork pool an attempt runs alone in its pool process, so that peak is
the attempt's own (plus the process's baseline: interpreter, Django, libraries). The growth
``peak - resident size at start`` is what the attempt itself added.

Limits: resident memory only (swapped-out pages are not counted); shared pages count in full;
with a thread or gevent pool, concurrent attempts in one process share one peak. Where
``clear_refs`` cannot be written (not Linux, restricted /proc), the fallback is
``getrusage().ru_maxrss``, the process's lifetime peak, which cannot be reset: the value is
then an upper bound and ``memory_method`` says ``ru_maxrss``.

Cost: the three files are opened once per process and kept open (``os.pread`` / ``os.write``
on the same descriptors: each read is generated afresh by the kernel, each write of ``5``
resets the peak again), and the start size comes from ``statm`` (one line) rather than
``status``: about 10 µs per attempt instead of about 100 µs with an ``open`` of each file per
read. A descriptor of ``/proc/self/...`` names the process that opened it, so a forked pool
process opens its own (the cache is keyed by pid).
"""

from __future__ import annotations

import os
import re
import resource
import sys

_STATUS = "/proc/self/status"
_STATM = "/proc/self/statm"
_CLEAR_REFS = "/proc/self/clear_refs"
_FIELD = re.compile(r"^(VmHWM|VmRSS):\s+(\d+)\s+kB", re.MULTILINE)
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4

# pid -> (clear_refs, status, statm) descriptors of that process, opened on first use.
_fds: dict[int, tuple[int, int, int]] = {}


def _own_fds() -> tuple[int, int, int]:
    pid = os.getpid()
    fds = _fds.get(pid)
    if fds is None:
        opened: list[int] = []
        try:
            for path, flags in (
                (_CLEAR_REFS, os.O_WRONLY),
                (_STATUS, os.O_RDONLY),
                (_STATM, os.O_RDONLY),
            ):
                opened.append(os.open(path, flags | getattr(os, "O_CLOEXEC", 0)))
        except OSError:
            for fd in opened:
                os.close(fd)
            raise
        fds = _fds[pid] = (opened[0], opened[1], opened[2])
    return fds


def _hwm_kb() -> int:
    """VmHWM from /proc/self/status (after each attempt: a find, not a regex over the file)."""
    status = os.pread(_own_fds()[1], 4096, 0)
    start = status.index(b"VmHWM:") + 6
    return int(status[start : status.index(b"kB", start)])


def _statm_rss_kb() -> int:
    return int(os.pread(_own_fds()[2], 256, 0).split()[1]) * _PAGE_KB


def rss_mb(pid: int | str = "self") -> float | None:
    """Current resident size of a process (MB), or None when /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            found = dict(_FIELD.findall(fh.read()))
        return int(found["VmRSS"]) / 1024
    except (OSError, KeyError, ValueError):
        return None


def attempt_baseline() -> dict:
    """Reset the peak and remember the resident size at the start of an attempt."""
    try:
        os.write(_own_fds()[0], b"5")
        return {"method": "vmhwm", "start_kb": _statm_rss_kb()}
    except (OSError, KeyError, IndexError, ValueError):
        return {"method": "ru_maxrss", "start_kb": _maxrss_kb()}


def attempt_peak(baseline: dict | None) -> tuple[float | None, float | None, str]:
    """(peak MB, growth MB over the start, method) for the attempt that took ``baseline``."""
    if not baseline:
        return None, None, ""
    try:
        peak_kb = _hwm_kb() if baseline["method"] == "vmhwm" else _maxrss_kb()
    except (OSError, KeyError, ValueError):
        return None, None, ""
    growth_kb = max(0, peak_kb - baseline["start_kb"])
    return round(peak_kb / 1024, 2), round(growth_kb / 1024, 2), baseline["method"]


def _maxrss_kb() -> int:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss  # bytes on macOS
