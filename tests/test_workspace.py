"""Per-thread work arrays (pyneuralfilter.workspace): reuse, separation by name and thread."""
import threading

import numpy as np

from pyneuralfilter import workspace


def test_same_name_reuses_its_memory():
    a = workspace.array("test.a", (16, 16), np.float64)
    b = workspace.array("test.a", (8, 4), np.float32)
    assert np.shares_memory(a, b) and b.shape == (8, 4) and b.dtype == np.float32
    assert b.flags.c_contiguous and b.flags.writeable


def test_names_never_share_memory():
    a = workspace.array("test.a", 1000, np.float64)
    b = workspace.array("test.b", 1000, np.float64)
    assert not np.shares_memory(a, b)


def test_zeros_clears_what_the_last_user_left():
    workspace.array("test.z", (64,), np.int8)[:] = 7
    assert not workspace.zeros("test.z", (8, 8), np.int8).any()


def test_growing_request_gets_room():
    workspace.array("test.g", 10, np.float64)
    big = workspace.array("test.g", (100, 100), np.float64)
    big[:] = 1.0                               # the whole of it is writable memory
    assert big.sum() == 1e4


def test_arrays_over_the_cap_are_not_kept():
    n = workspace.MAX_BYTES // 8 + 1
    a = workspace.array("test.huge", n, np.float64)
    b = workspace.array("test.huge", n, np.float64)
    assert a.size == n and not np.shares_memory(a, b)


def test_threads_get_their_own_arrays():
    mine = workspace.array("test.t", 256, np.float64)
    theirs = []
    t = threading.Thread(target=lambda: theirs.append(workspace.array("test.t", 256, np.float64)))
    t.start()
    t.join()
    assert not np.shares_memory(mine, theirs[0])


def test_a_repeated_request_follows_the_buffer_when_it_grew():
    workspace.array("test.r", 10, np.float64)
    big = workspace.array("test.r", 1000, np.float64)          # a new, larger buffer
    again = workspace.array("test.r", 10, np.float64)
    assert np.shares_memory(again, big) and again.shape == (10,) and again.dtype == np.float64
    assert workspace.array("test.r", 10, np.float64) is again  # the same view, not rebuilt
