"""The codec runs on its caller's thread alone: the thread pools of the libraries it calls
(numpy's BLAS, torch's OpenMP) are held to one thread while it works.

The codec's matrix products are small (a pass's least-squares fit, the SWAE on a chunk's
blocks).  Left to their defaults, those pools start a thread per core for them and keep the
threads spinning after each call, where they take cores from the codec's own compiled loops
(and from the host's other threads and MPI ranks): on 2 cores, encoding a 32^3 chunk took
28 ms instead of 14.  threadpoolctl (the pool controller scikit-learn uses) sets and restores
the limits; products are exact integer sums or encoder-side fits either way.

Each thread's outermost codec call takes the limits and gives them back; nested calls run under
them.  OpenMP limits hold for the calling thread only.  OpenBLAS's pool is shared by the
process: threadpoolctl (>= 3.8) lets one thread at a time change it, so concurrent calls in
other threads neither undo its limit nor leave it set.
"""
import functools
import sys
import threading

from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
_pools = {"modules": -1, "controller": None}
_thread = threading.local()


def one_thread(function):
    """Decorator: run `function` with the BLAS and OpenMP pools limited to one thread (restored
    after; about 25 us per outermost call, so only around calls that use those libraries)."""
    @functools.wraps(function)
    def limited(*args, **kwargs):
        if getattr(_thread, "limited", False):
            return function(*args, **kwargs)         # nested: the outer call holds the limits
        _thread.limited = True
        try:
            with _controller().limit(limits=1):
                return function(*args, **kwargs)
        finally:
            _thread.limited = False
    return limited


def _controller():
    """The pools loaded now: found again whenever a module was imported since (~1.5 ms), as
    torch (imported only to encode with a SWAE) and other extensions bring their own."""
    with _lock:
        if _pools["modules"] != len(sys.modules):
            _pools.update(modules=len(sys.modules), controller=ThreadpoolController())
        return _pools["controller"]
