"""`one_thread`: each thread's outermost codec call takes the pool limits and gives them back,
nested calls run under them, and concurrent calls in other threads leave every pool's limit as
they found it (OpenMP limits are per thread; threadpoolctl lets one thread at a time change
OpenBLAS's process-wide pool).  Extensions with OpenMP runtimes of their own (zfpy, torch) are
imported first, where present."""
import importlib
import sys
import threading

from threadpoolctl import threadpool_info, threadpool_limits

from pyneuralfilter.threads import one_thread

for _name in ("zfpy", "torch"):
    try:
        importlib.import_module(_name)
    except ImportError:
        pass


def _pools():
    return [(p["filepath"], p["num_threads"]) for p in threadpool_info()]


def _used():
    """Threads of the pools the codec calls into: every BLAS, and torch's OpenMP pool."""
    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    torch = sys.modules.get("torch")
    return blas + ([torch.get_num_threads()] if torch else [])


def _openmp():
    torch = sys.modules.get("torch")
    return [torch.get_num_threads()] if torch else []


def test_overlapping_calls_restore_the_callers_limits():
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    inside = []

    @one_thread
    def call(entered, wait_for):
        entered.set()
        wait_for.wait(10)
        inside.append(_openmp())                     # this thread's OpenMP pools: limited

    with threadpool_limits(2):
        before = _pools()
        a = threading.Thread(target=lambda: (call(first_in, second_in), first_out.set()))
        b = threading.Thread(target=lambda: (first_in.wait(10), call(second_in, first_out)))
        a.start(), b.start()
        a.join(10), b.join(10)
        after = _pools()
    # the first call left while the second was still inside; neither undid nor leaked a limit
    assert len(inside) == 2 and all(set(p) <= {1} for p in inside), inside
    assert after == before


def test_nested_calls_keep_the_limits_until_the_outermost_returns():
    @one_thread
    def inner():
        return _used()

    @one_thread
    def outer():
        return inner(), _used()

    with threadpool_limits(2):
        before = _pools()
        in_inner, after_inner = outer()
        assert set(in_inner) == {1} and set(after_inner) == {1}, (in_inner, after_inner, _pools())
        assert _pools() == before
