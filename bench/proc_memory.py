"""Resident memory of this process, read from /proc (Linux), for the benchmarks that report RSS."""
from __future__ import annotations


def rss_mb() -> float:
    """Current resident set size in MB (NaN where /proc/self/status has no VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
