"""glibc malloc settings for a process that allocates and frees large tensors over and over.

By default glibc serves blocks over its dynamic mmap threshold (at most 32 MiB) with mmap and returns freed memory
at the top of the heap to the kernel once more than 128 KiB is free there. A sampling loop frees and reallocates the
same activations every step (a 250-image batch of the bundled U-Net has 50 MB activations), so the kernel maps,
zero-fills and unmaps them each time: `difflab sample --batch 250` spent about a third of its CPU time in the
kernel. Keeping freed memory in the heap for reuse removes that (bench/sampling_memory.py measures it). The cost is
that the process keeps its peak heap until it exits, as a caching allocator does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30  # blocks under 1 GiB come from the heap, so they are reused once freed
TOP_PAD = 64 << 20  # grow the heap 64 MiB at a time
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
OPT_OUT = "DIFFLAB_SYSTEM_MALLOC"  # set (to anything) to leave malloc as glibc sets it


def keep_freed_memory() -> bool:
    """Tell glibc malloc to keep freed memory for reuse (no trimming, large blocks from the heap). True when set;
    False on another C library, when the environment sets malloc's tunables (the user's choice wins) or OPT_OUT."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in (*USER_SETTINGS, OPT_OUT)):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # M_TRIM_THRESHOLD -1: as a size_t the largest value, so the heap is never trimmed
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TOP_PAD, TOP_PAD), (M_TRIM_THRESHOLD, -1))
    return all(mallopt(param, value) == 1 for param, value in settings)
