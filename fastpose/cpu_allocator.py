"""An opt-in caching allocator for CPU tensors.

glibc returns large freed blocks to the system (a fresh ``mmap`` per block above its mmap threshold, or
a trim of the heap top), so the activations of each forward or training step are often new pages: a
page fault and a zeroing per 4 KiB, serialised in the kernel when several threads fault. On the shared
VMs this project is measured on, that made the packed binary HPM model's 2-thread forward 1.6x slower
than with the blocks reused (NOTES.md). With the caching allocator installed, freed CPU blocks of
``min_block_bytes`` and more are kept (up to ``max_cached_bytes``) and handed out again; smaller blocks
go to the allocator installed before (PyTorch's default). It applies to every CPU tensor of the process
(fastpose's and PyTorch's), like ``LD_PRELOAD``-ing jemalloc or tcmalloc would, but needs nothing
outside Python::

    import fastpose
    fastpose.enable_cpu_caching_allocator()            # or FASTPOSE_CPU_CACHING_ALLOCATOR=1 at import
    ...
    fastpose.cpu_caching_allocator_stats()             # hits, misses, bytes in use / cached
    fastpose.disable_cpu_caching_allocator()           # back to the previous allocator

The trade-off is memory: up to ``max_cached_bytes`` of freed tensors stay with the process (counted
as its resident memory) until ``empty_cpu_cache()`` or ``disable_cpu_caching_allocator()``.
Tensors allocated while it was enabled stay valid after it is disabled.
"""
import contextlib
import os

from . import _C

__all__ = ["enable_cpu_caching_allocator", "disable_cpu_caching_allocator", "cpu_caching_allocator",
           "cpu_caching_allocator_stats", "empty_cpu_cache"]

DEFAULT_MAX_CACHED_BYTES = 2 << 30
DEFAULT_MIN_BLOCK_BYTES = 256 << 10


def _check_bytes(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int number of bytes, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def enable_cpu_caching_allocator(max_cached_bytes=DEFAULT_MAX_CACHED_BYTES, min_block_bytes=DEFAULT_MIN_BLOCK_BYTES):
    """Install the caching allocator for CPU tensors (or change its limits when installed).

    max_cached_bytes: freed bytes kept for reuse at most (default 2 GiB); min_block_bytes: blocks below
    this size (default 256 KiB) are left to the previous allocator, which handles small blocks well.
    """
    _check_bytes(max_cached_bytes, "max_cached_bytes", 0)
    _check_bytes(min_block_bytes, "min_block_bytes", 1)
    _C.caching_allocator_enable(max_cached_bytes, min_block_bytes)


def disable_cpu_caching_allocator():
    """Restore the CPU allocator installed before and return the cached blocks to the system."""
    _C.caching_allocator_disable()


def empty_cpu_cache():
    """Return the cached (freed) blocks to the system; tensors in use are not affected."""
    _C.caching_allocator_empty_cache()


def cpu_caching_allocator_stats():
    """dict: enabled, in_use_bytes, peak_in_use_bytes, cached_bytes, hits, misses, max_cached_bytes,
    min_block_bytes (the byte counts are of this allocator's blocks only, i.e. those >= min_block_bytes)."""
    return dict(_C.caching_allocator_stats())


@contextlib.contextmanager
def cpu_caching_allocator(max_cached_bytes=DEFAULT_MAX_CACHED_BYTES, min_block_bytes=DEFAULT_MIN_BLOCK_BYTES):
    """Context manager: the caching allocator installed inside the block (restored state after)."""
    was = cpu_caching_allocator_stats()
    enable_cpu_caching_allocator(max_cached_bytes, min_block_bytes)
    try:
        yield
    finally:
        if was["enabled"]:
            enable_cpu_caching_allocator(was["max_cached_bytes"], was["min_block_bytes"])
        else:
            disable_cpu_caching_allocator()


def _enable_from_env():
    v = os.environ.get("FASTPOSE_CPU_CACHING_ALLOCATOR", "").strip()
    if v in ("", "0"):
        return
    if v != "1":
        raise ValueError(f"FASTPOSE_CPU_CACHING_ALLOCATOR must be 0 or 1, got {v!r}")
    enable_cpu_caching_allocator()
