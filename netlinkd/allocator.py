"""glibc malloc settings that keep the helper's RSS down (issue 16).

glibc gives each thread that allocates its own arena; gRPC's threads and the netlink thread
then hold a few MiB each that the others cannot reuse. The helper's work is serial, so one
arena serves. Freed memory stays mapped until trimmed, so the helper trims whenever its
batch queue runs empty.
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # glibc's <malloc.h>
_libc = ctypes.CDLL(None)


def use_one_arena() -> None:
    """Before any thread starts: every thread allocates from the main arena."""
    _libc.mallopt(M_ARENA_MAX, 1)


def release_free_memory() -> None:
    """Return the free pages of the arena to the kernel."""
    _libc.malloc_trim(0)
