"""Process memory readings the benchmarks share (Linux ``/proc``; ``getrusage`` elsewhere)."""

from __future__ import annotations

import contextlib
import ctypes
import re
import resource
import sys
from pathlib import Path

MIB = 1024 * 1024


def status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), ``None`` where there is none."""
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process (Linux >= 4.0); False if not."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return status_kib("VmHWM") is not None


def malloc_trim() -> None:
    """Hand freed heap back to the OS (glibc), so a later peak is not hidden by reused pages."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def ru_maxrss_mib() -> float:
    """The process's lifetime RSS peak in MiB (the fallback where VmHWM cannot be reset)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024
