"""Halo (ghost-layer) exchange of a 3D field on a Cartesian communicator, sent as neural codes.

A rank holds a local array of shape ``(nx + 2h, ny + 2h, nz + 2h)``: the interior plus ``h``
ghost layers on every side.  :class:`HaloExchange` fills the ghost layers from the six face
neighbours of ``cart`` (``MPI.Comm.Create_cart``, periodic or not; a ``PROC_NULL`` neighbour
leaves its ghost layers untouched for the simulation's boundary condition).

How a face becomes 5x5x5 blocks
    The slab sent across a face is ``t = 5 * ceil(h / 5)`` layers thick: the ``t`` interior layers
    next to the face (real data, so the codec sees the smooth fields it was trained on), or, when
    the interior is thinner than ``t``, all interior layers padded by repeating the outermost one.
    Its two other extents are padded to multiples of 5 by repeating the last row.  The slab is cut
    into 5x5x5 blocks (one message per face), and the receiver keeps only the ``h`` layers next to
    the face and crops the padding.  So for ``h < 5`` the message carries ``5 / h`` times more
    values than the ghost layers need: with ``h = 1`` a bounded message still beats raw only if the
    codec's ratio exceeds 5 (the byte counters below count both).

Corners
    ``corners=False`` (default) exchanges the six faces at once (enough for 7-point stencils).
    ``corners=True`` exchanges x, then y, then z, each slab including the ghost layers already
    filled, so edges and corners are filled too (27-point stencils), at the cost of three phases.
    A corner value is then compressed up to three times (once per phase), so in bounded mode each
    phase codes at a third of the bound: every ghost value stays within ``abs`` (or ``rel``).

Every rank must construct the exchange (collective): it checks that all ranks use the same mode
and model, and raises :class:`ModelMismatchError` on every rank otherwise, so no rank is left
waiting.  ``rel`` is relative to the value range of each message; use ``abs`` for a bound that is
the same everywhere.
"""
import numpy as np

from .exchange import (DEFAULT_TAG, ModelMismatchError, _check_args, irecv_blocks,
                       isend_blocks, model_hash, waitall)

__all__ = ["HaloExchange", "slab_to_blocks", "blocks_to_slab"]


def _ceil5(n):
    return -(-n // 5) * 5


def slab_to_blocks(slab):
    """Pad a 3D array to multiples of 5 (edge values) and cut it into (n, 5, 5, 5) blocks."""
    pad = [(0, _ceil5(s) - s) for s in slab.shape]
    p = np.pad(slab, pad, mode="edge") if any(b for _, b in pad) else slab
    a, b, c = (s // 5 for s in p.shape)
    return np.ascontiguousarray(
        p.reshape(a, 5, b, 5, c, 5).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 5, 5, 5))


def blocks_to_slab(blocks, shape):
    """Inverse of :func:`slab_to_blocks`: reassemble and crop to ``shape``."""
    a, b, c = (_ceil5(s) // 5 for s in shape)
    full = blocks.reshape(a, b, c, 5, 5, 5).transpose(0, 3, 1, 4, 2, 5).reshape(
        5 * a, 5 * b, 5 * c)
    return full[:shape[0], :shape[1], :shape[2]]


class _HaloRequest:
    """A started halo exchange; ``wait()`` completes it and writes the ghost layers."""

    def __init__(self, owner, field, phases):
        self._owner, self._field, self._phases = owner, field, list(phases)
        self._pending = owner._start_phase(field, self._phases.pop(0))

    def wait(self):
        while True:
            self._owner._finish_phase(self._field, self._pending)
            if not self._phases:
                return self._field
            self._pending = self._owner._start_phase(self._field, self._phases.pop(0))

    Wait = wait


class HaloExchange:
    """Fill the ghost layers of a local 3D field from the neighbours of a Cartesian communicator.

    ``shape``: this rank's interior shape (nx, ny, nz); fields passed to :meth:`exchange` have
    shape ``(nx + 2h, ny + 2h, nz + 2h)``.  ``mode``, ``abs``, ``rel``, ``model`` are those of
    :func:`isend_blocks`.  Counters: ``bytes_sent`` (on the wire, headers included),
    ``raw_bytes`` (the ghost values the neighbours needed, at the field's dtype), ``messages``.
    """

    def __init__(self, cart, shape, h, *, mode="bounded", abs=None, rel=None, model=None,
                 corners=False, tag=DEFAULT_TAG + 64):
        if getattr(cart, "Get_dim", None) is None or cart.Get_dim() != 3:
            raise ValueError("cart must be a 3D Cartesian communicator (MPI.Comm.Create_cart "
                             "with 3 dims)")
        _check_args(mode, abs, rel)
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or h < 1 or min(shape) < h:
            raise ValueError(f"need a 3D interior shape with every extent >= h >= 1, got "
                             f"shape {shape}, h {h}")
        self.cart, self.shape, self.h, self.corners, self.tag = cart, shape, int(h), corners, tag
        self.mode, self.abs, self.rel, self.model = mode, abs, rel, model
        share = 3 if corners else 1                  # errors add up over the three phases
        self._abs = None if abs is None else abs / share
        self._rel = None if rel is None else rel / share
        self.neighbours = [cart.Shift(d, 1) for d in range(3)]        # (low, high) per axis
        self.bytes_sent = self.raw_bytes = self.messages = 0
        self._agree()

    def _agree(self):
        local_error = None
        try:
            mine = (self.mode, None if self.mode == "raw" else model_hash(self.model))
        except Exception as exc:                     # still join the collective, then raise
            local_error, mine = exc, ("error", f"{type(exc).__name__}: {exc}")
        everyone = self.cart.allgather(mine)
        if local_error is not None:
            raise local_error
        if len(set(everyone)) > 1:
            listing = ", ".join(f"rank {r}: mode {m!r} model {h}" for r, (m, h)
                                in enumerate(everyone))
            raise ModelMismatchError(f"ranks of the halo exchange disagree on mode or model "
                                     f"({listing}); every rank must pass the same mode= and "
                                     f"model=")

    # geometry -------------------------------------------------------------------------------
    def _slab(self, field, d, high, full_axes):
        """Index of the slab to send toward the low (high=False) or high neighbour of axis d."""
        h, n = self.h, self.shape[d]
        t = min(_ceil5(h), n)
        idx = []
        for e in range(3):
            if e == d:
                idx.append(slice(h + n - t, h + n) if high else slice(h, h + t))
            elif e in full_axes:
                idx.append(slice(0, self.shape[e] + 2 * h))
            else:
                idx.append(slice(h, h + self.shape[e]))
        return tuple(idx), t

    def _ghost(self, d, high, full_axes):
        """Index of the ghost layers on the low/high side of axis d."""
        h, n = self.h, self.shape[d]
        idx = []
        for e in range(3):
            if e == d:
                idx.append(slice(h + n, 2 * h + n) if high else slice(0, h))
            elif e in full_axes:
                idx.append(slice(0, self.shape[e] + 2 * h))
            else:
                idx.append(slice(h, h + self.shape[e]))
        return tuple(idx)

    def _padded_shape(self, d, full_axes):
        return tuple(_ceil5(self.h) if e == d else
                     (self.shape[e] + 2 * self.h if e in full_axes else self.shape[e])
                     for e in range(3))

    # communication --------------------------------------------------------------------------
    def _start_phase(self, field, axes):
        from mpi4py import MPI
        done_before = set(range(axes[0])) if self.corners else set()
        sends, recvs = [], []
        for d in axes:
            low, high = self.neighbours[d]
            pshape = self._padded_shape(d, done_before)
            for to_high, dest in ((False, low), (True, high)):
                if dest == MPI.PROC_NULL:
                    continue
                idx, t = self._slab(field, d, to_high, done_before)
                slab = field[idx]
                if t < pshape[d]:                       # thin interior: repeat the outer layer
                    widths = [(0, 0)] * 3
                    widths[d] = (pshape[d] - t, 0) if to_high else (0, pshape[d] - t)
                    slab = np.pad(slab, widths, mode="edge")
                blocks = slab_to_blocks(np.ascontiguousarray(slab))
                req = isend_blocks(self.cart, blocks, dest, self.tag + 2 * d + int(to_high),
                                   mode=self.mode, abs=self._abs, rel=self._rel, model=self.model)
                sends.append(req)
                self.bytes_sent += req.nbytes
                self.messages += 1
                ghost_values = self.h * int(np.prod([s for e, s in enumerate(slab.shape)
                                                     if e != d]))
                self.raw_bytes += ghost_values * field.dtype.itemsize
            nblocks = int(np.prod([_ceil5(s) // 5 for s in pshape]))
            # the message travelling toward +d arrives from the low neighbour into the low ghost
            for from_low, src in ((True, low), (False, high)):
                if src == MPI.PROC_NULL:
                    continue
                rreq = irecv_blocks(self.cart, src, self.tag + 2 * d + int(from_low),
                                    model=self.model, mode=self.mode, n=nblocks)
                recvs.append((rreq, d, from_low, pshape, set(done_before)))
        return sends, recvs

    def _finish_phase(self, field, pending):
        sends, recvs = pending
        results = waitall(sends + [r[0] for r in recvs])[len(sends):]
        h = self.h
        for data, (_, d, from_low, pshape, full_axes) in zip(results, recvs):
            slab = blocks_to_slab(data, pshape)
            keep = [slice(None)] * 3
            keep[d] = slice(pshape[d] - h, pshape[d]) if from_low else slice(0, h)
            field[self._ghost(d, not from_low, full_axes)] = slab[tuple(keep)]

    def start(self, field) -> _HaloRequest:
        """Start the exchange (non-blocking when ``corners=False``); ``.wait()`` finishes it."""
        want = tuple(s + 2 * self.h for s in self.shape)
        if field.shape != want:
            raise ValueError(f"field has shape {field.shape}, this exchange expects {want} "
                             f"(interior {self.shape} plus h={self.h} ghost layers per side)")
        phases = [[0], [1], [2]] if self.corners else [[0, 1, 2]]
        return _HaloRequest(self, field, phases)

    def exchange(self, field):
        """Fill the ghost layers of ``field`` in place and return it."""
        return self.start(field).wait()
