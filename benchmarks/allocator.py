"""Allocator settings shared by the benchmarks."""

from __future__ import annotations

import ctypes


def keep_freed_memory() -> None:
    """On glibc, keep freed memory for reuse rather than returning it to the system, so that each
    step's large buffers are not page-faulted in anew: a noise source on virtual machines, where
    whether a step faults changes from run to run and hits the contenders unevenly."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_mmap_threshold, 1 << 30)
