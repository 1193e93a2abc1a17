"""The codec runs on its caller's thread alone: the thread pools of the libraries it calls
(numpy's BLAS, torch's OpenMP) are held to one thread while it works.

The codec's matrix products are small (a pass's least-squares fit, the SWAE on a chunk's
blocks).  Left to their defaults, those pools start a thread per core for them and keep the
threads spinning after each call, where they take cores from the codec's own compiled loops
(and from the host's other threads and MPI ranks): on 2 cores, encoding a 32^3 chunk took
28 ms instead of 14.  threadpoolctl (the pool controller scikit-learn uses) sets and restores
the limits; products are exact integer sums or encoder-side fits either way.  The limit is
process-wide, so it is taken by the first codec call to enter and given back by the last to
leave: concurrent and nested calls never restore a limit another call set.
"""
import functools
import sys
import threading

from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
_held = {"calls": 0, "limiter": None}


def one_thread(function):
    """Decorator: run `function` with the BLAS and OpenMP pools limited to one thread (restored
    after; about 20 us per outermost call, so only around calls that use those libraries)."""
    @functools.wraps(function)
    def limited(*args, **kwargs):
        with _lock:
            if not _held["calls"]:
                _held["limiter"] = _controller("torch" in sys.modules).limit(limits=1)
            _held["calls"] += 1
        try:
            return function(*args, **kwargs)
        finally:
            with _lock:
                _held["calls"] -= 1
                if not _held["calls"]:
                    limiter, _held["limiter"] = _held["limiter"], None
                    limiter.restore_original_limits()
    return limited


@functools.lru_cache(maxsize=2)
def _controller(torch_loaded):
    """The pools loaded now (torch, imported only to encode with a SWAE, brings its own)."""
    return ThreadpoolController()
