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
"""

from __future__ import annotations

import re
import resource
import sys

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
_FIELD = re.compile(r"^(VmHWM|VmRSS):\s+(\d+)\s+kB", re.MULTILINE)


def _status_kb() -> dict[str, int]:
    with open(_STATUS) as fh:
        return {name: int(kb) for name, kb in _FIELD.findall(fh.read())}


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
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return {"method": "vmhwm", "start_kb": _status_kb()["VmRSS"]}
    except (OSError, KeyError):
        return {"method": "ru_maxrss", "start_kb": _maxrss_kb()}


def attempt_peak(baseline: dict | None) -> tuple[float | None, float | None, str]:
    """(peak MB, growth MB over the start, method) for the attempt that took ``baseline``."""
    if not baseline:
        return None, None, ""
    try:
        peak_kb = _status_kb()["VmHWM"] if baseline["method"] == "vmhwm" else _maxrss_kb()
    except (OSError, KeyError):
        return None, None, ""
    growth_kb = max(0, peak_kb - baseline["start_kb"])
    return round(peak_kb / 1024, 2), round(growth_kb / 1024, 2), baseline["method"]


def _maxrss_kb() -> int:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss  # bytes on macOS
