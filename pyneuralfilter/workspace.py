"""Per-thread work arrays, reused from chunk to chunk by the decoder.

A fresh array of a few hundred kB may be mapped anew by malloc, and every 4 kB page of it then
costs a page fault when first written (measured: ~32 per 32³ chunk decoded into new arrays, 0
with reused ones; through h5py malloc already reused its heap, so reading through HDF5 got no
faster).  Arrays up to MAX_BYTES are kept, one per name and thread, and handed out again; larger
ones are allocated each time and not kept alive.
"""
import math
import threading

import numpy as np

MAX_BYTES = 32 << 20


class _Pool(threading.local):
    def __init__(self):
        self.buffers = {}
        self.views = {}                 # name: (shape, dtype, the view last handed out)


_pool = _Pool()


def array(name, shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array for `name`, valid until the next request for `name`
    on this thread: each caller uses names of its own, one per array it holds at once."""
    last = _pool.views.get(name)
    if last is not None and last[0] == shape and last[1] == dtype:
        return last[2]                  # the same request as the last one: the same view
    dtype = np.dtype(dtype)
    nbytes = math.prod((shape,) if isinstance(shape, int) else shape) * dtype.itemsize
    if nbytes > MAX_BYTES:
        return np.empty(shape, dtype)
    buf = _pool.buffers.get(name)
    if buf is None or buf.size < nbytes:
        buf = _pool.buffers[name] = np.empty(max(nbytes, 64), np.uint8)   # numpy aligns it
    view = buf[:nbytes].view(dtype).reshape(shape)
    _pool.views[name] = (shape, dtype, view)
    return view


def zeros(name, shape, dtype) -> np.ndarray:
    """`array`, filled with zeros."""
    out = array(name, shape, dtype)
    out.fill(0)
    return out
