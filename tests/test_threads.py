"""`one_thread`: BLAS limits (process-wide) are taken by the first codec call in and given back
by the last one out, OpenMP limits (per thread) by each thread's outermost call, so concurrent
and nested calls see one thread everywhere and leave the caller's limits as they found them.
Extensions with OpenMP runtimes of their own (zfpy, torch) are imported first, where present."""
import importlib
import threading

from threadpoolctl import threadpool_info, threadpool_limits

from pyneuralfilter.threads import one_thread

for _name in ("zfpy", "torch"):
    try:
        importlib.import_module(_name)
    except ImportError:
        pass


def _pools():
    return [p["num_threads"] for p in threadpool_info()]


def test_overlapping_calls_restore_the_callers_limits():
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    inside = []

    @one_thread
    def call(entered, wait_for):
        entered.set()
        wait_for.wait(10)
        inside.append(_pools())

    with threadpool_limits(2):
        before = _pools()
        a = threading.Thread(target=lambda: (call(first_in, second_in), first_out.set()))
        b = threading.Thread(target=lambda: (first_in.wait(10), call(second_in, first_out)))
        a.start(), b.start()
        a.join(10), b.join(10)
        after = _pools()
    # the first call left while the second was still inside: the limit stayed, then came back
    assert len(inside) == 2 and all(set(p) == {1} for p in inside)
    assert after == before


def test_nested_calls_keep_the_limit_until_the_outermost_returns():
    @one_thread
    def inner():
        return _pools()

    @one_thread
    def outer():
        return inner(), _pools()

    with threadpool_limits(2):
        before = _pools()
        in_inner, after_inner = outer()
        assert set(in_inner) == {1} and set(after_inner) == {1}
        assert _pools() == before
