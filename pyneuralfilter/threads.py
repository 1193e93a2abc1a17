"""The codec runs on its caller's thread alone: the thread pools of the libraries it calls
(numpy's BLAS, torch's OpenMP) are held to one thread while it works.

The codec's matrix products are small (a pass's least-squares fit, the SWAE on a chunk's
blocks).  Left to their defaults, those pools start a thread per core for them and keep the
threads spinning after each call, where they take cores from the codec's own compiled loops
(and from the host's other threads and MPI ranks): on 2 cores, encoding a 32^3 chunk took
28 ms instead of 14.  threadpoolctl (the pool controller scikit-learn uses) sets and restores
the limits; products are exact integer sums or encoder-side fits either way.

A BLAS limit holds for the whole process, so the first codec call in takes it and the last one
out gives it back; an OpenMP limit holds for the calling thread, so each thread's outermost
call takes and gives back its own.  Concurrent and nested calls never undo each other's limits.
"""
import functools
import sys
import threading

from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
_process = {"calls": 0, "blas": None, "modules": -1, "controller": None}
_thread = threading.local()                  # calls, openmp: this thread's


def one_thread(function):
    """Decorator: run `function` with the BLAS and OpenMP pools limited to one thread (restored
    after; about 20 us per outermost call, so only around calls that use those libraries)."""
    @functools.wraps(function)
    def limited(*args, **kwargs):
        depth = getattr(_thread, "calls", 0)
        if not depth:
            with _lock:
                pools = _controller()
                if not _process["calls"]:
                    _process["blas"] = pools.limit(limits=1, user_api="blas")
                _process["calls"] += 1
            _thread.openmp = pools.limit(limits=1, user_api="openmp")
        _thread.calls = depth + 1
        try:
            return function(*args, **kwargs)
        finally:
            _thread.calls = depth
            if not depth:
                _thread.openmp.restore_original_limits()
                with _lock:
                    _process["calls"] -= 1
                    if not _process["calls"]:
                        _process["blas"].restore_original_limits()
    return limited


def _controller():
    """The pools loaded now (call with _lock held): found again whenever a module was imported
    since (~1.5 ms), as torch (imported only to encode with a SWAE) and other extensions bring
    their own."""
    if _process["modules"] != len(sys.modules):
        _process.update(modules=len(sys.modules), controller=ThreadpoolController())
    return _process["controller"]
