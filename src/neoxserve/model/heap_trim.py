"""Giving freed heap memory back to the OS while a model loads (glibc's malloc_trim)."""
from __future__ import annotations

import ctypes
import functools
from typing import Any


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):     # not glibc
        return None


def release_freed_memory() -> None:
    """Give the float weight and the quantization temporaries just freed back to the OS. glibc keeps freed blocks
    below its mmap threshold (up to 32 MB) in the heap, and the pattern of one float tensor read, several
    temporaries and a smaller quantized result per linear fragments it: loading a model of 4 MB tensors as int8
    was measured to hold up to 130 MB of freed memory, as much as half the fp32 checkpoint (tests/model/
    test_loader.py checks the peak). Larger tensors are mmapped by glibc and released on free anyway."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
