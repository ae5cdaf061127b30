"""A caching allocator for CPU tensors: opt-in for the whole process, on by default in inference scopes.

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

Inference scopes. fastpose's own CPU inference path (the packed binary HPM forward) runs inside an
``inference_scope()``: blocks of ``min_block_bytes`` and more that the calling thread allocates there are
taken from the same cache, even when the process-wide allocator is not enabled, so one forward's
activations are the next one's (no page faults: ~4000 per forward of the packed model without it).
Allocations outside a scope are untouched. It is the arena an inference runtime keeps (onnxruntime's CPU
arena is on by default); ``set_inference_cache(False)`` or ``FASTPOSE_INFERENCE_CACHE=0`` at import turns
it off, ``empty_cpu_cache()`` hands the cached blocks back. Scopes use the limits last set (by default at
most 512 MiB cached, blocks of 256 KiB and more); when the cache is full, the blocks of the size classes
used least recently (e.g. another input size) are freed first. The first scope installs the allocator as
c10's CPU allocator (at c10's default priority, so an allocator installed later the usual way replaces
it); from then on every CPU allocation passes through it (a thread-local check) on its way to the
previous allocator.
"""
import contextlib
import os

import torch

from . import _C

__all__ = ["enable_cpu_caching_allocator", "disable_cpu_caching_allocator", "cpu_caching_allocator",
           "cpu_caching_allocator_stats", "empty_cpu_cache", "inference_scope", "set_inference_cache"]

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
    """Restore the CPU allocator installed before and return the cached blocks to the system. (The next
    ``inference_scope``, e.g. the next packed HPM forward, installs it again for its scoped blocks; use
    ``set_inference_cache(False)`` to stop that too.)"""
    _C.caching_allocator_disable()


def empty_cpu_cache():
    """Return the cached (freed) blocks to the system; tensors in use are not affected."""
    _C.caching_allocator_empty_cache()


def cpu_caching_allocator_stats():
    """dict: enabled (process-wide), installed (c10's CPU allocator is this one: enabled, or an inference
    scope ran), in_use_bytes, peak_in_use_bytes, cached_bytes, hits, misses, max_cached_bytes,
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


def _env_inference_cache():
    v = os.environ.get("FASTPOSE_INFERENCE_CACHE", "").strip()
    if v not in ("", "0", "1"):
        raise ValueError(f"FASTPOSE_INFERENCE_CACHE must be 0 or 1, got {v!r}")
    return v != "0"


_C.caching_allocator_set_scopes(_env_inference_cache())


def set_inference_cache(enabled):
    """Turn the inference scopes' caching on or off (default on; ``FASTPOSE_INFERENCE_CACHE=0`` at import
    starts with it off). Off, ``inference_scope()`` does nothing and, unless the process-wide allocator is
    enabled, the cached blocks are returned to the system and freed blocks are no longer kept."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    _C.caching_allocator_set_scopes(enabled)


class inference_scope:
    """Context manager: CPU blocks of ``min_block_bytes`` and more allocated by this thread inside it come
    from the caching allocator's cache (module docstring). Nests; re-entrant across threads (the scope is
    per thread). ``device``: a ``torch.device`` or device type string; the scope is a no-op for anything
    but CPU (and when ``set_inference_cache(False)``)."""

    __slots__ = ("_on",)

    def __init__(self, device="cpu"):
        # The on / off switch is the allocator's (set_inference_cache): a scope it is off for caches nothing.
        self._on = (device.type if isinstance(device, torch.device) else torch.device(device).type) == "cpu"

    def __enter__(self):
        if self._on:
            _C.caching_allocator_scope_enter()
        return self

    def __exit__(self, *exc):
        if self._on:
            _C.caching_allocator_scope_exit()
        return False
