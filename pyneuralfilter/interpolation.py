"""Multilevel interpolation: predict every point from already-decoded neighbours.

The grid is refined level by level (stride S/2, ..., 2, 1); within a level the new points
are predicted along z, then y, then x, each by cubic interpolation of the two nearest
decoded neighbours on each side (quadratic, linear or extrapolated where the volume ends).
All weights are dyadic rationals and the arithmetic is fixed-order float64 in compiled
kernels (numba), so encoder and decoder compute bit-identical predictions on any machine.
The decoder of format v3 runs a whole volume in one compiled call (`volume_decode`): each pass
walks its targets once, entropy-decoding run flags and codes (rans.py) with their contexts and
reconstructing as it goes.
"""
import functools
from dataclasses import dataclass

import numba
import numpy as np

from . import entropy, rans


@dataclass(frozen=True)
class Pass:
    """The points predicted together: a strided sub-grid, interpolated along `axis`.
    Targets sit at odd multiples of `stride` on `axis`, at multiples of `stride` on the axes
    before it and of 2*stride on the axes after it (those are not refined yet)."""
    axis: int
    stride: int

    @property
    def level(self):
        return min(self.stride.bit_length() - 1, 2)    # 0: stride 1, 1: stride 2, 2: coarser


def passes(shape):
    """The prediction passes of a 3D volume, coarse to fine.  Point (0, 0, 0) comes first
    and is not in any pass."""
    top = 1
    while top < max(shape):
        top *= 2
    stride = top // 2
    while stride >= 1:
        for axis in range(3):
            if shape[axis] > stride:
                yield Pass(axis, stride)
        stride //= 2


TAP_UNIT = 256                 # interior taps are stored as integers: a = tap / TAP_UNIT
CUBIC_TAP = 16                 # a = 1/16: the cubic (-1, 9, 9, -1) / 16


@functools.lru_cache(maxsize=1024)
def weights(n, s, cubic, tap=CUBIC_TAP):
    """Weights of neighbours (t-3s, t-s, t+s, t+3s) for the targets t = s, 3s, ... < n,
    shaped (4, count): where all four exist (-a, 1/2 + a, 1/2 + a, -a) with a = tap / 256
    (cubic: 1/16), else quadratic, linear or extrapolated; `cubic=False` asks for linear
    inside and the nearest value at the far end.  All weights are dyadic rationals."""
    w = np.empty((4, len(range(s, n, 2 * s))))
    _weights_into(w, n, s, cubic, tap)
    w.flags.writeable = False
    return w


@numba.njit(cache=True)
def _weights_into(w, n, s, cubic, tap):
    a = tap / TAP_UNIT
    for i in range(w.shape[1]):
        t = s + 2 * s * i
        has_a, has_c, has_d = cubic and t - 3 * s >= 0, t + s < n, cubic and t + 3 * s < n
        if has_c and has_a and has_d:
            w[0, i], w[1, i], w[2, i], w[3, i] = -a, 0.5 + a, 0.5 + a, -a
        elif has_c and has_d:
            w[0, i], w[1, i], w[2, i], w[3, i] = 0.0, 3 / 8, 6 / 8, -1 / 8
        elif has_c and has_a:
            w[0, i], w[1, i], w[2, i], w[3, i] = -1 / 8, 6 / 8, 3 / 8, 0.0
        elif has_c:
            w[0, i], w[1, i], w[2, i], w[3, i] = 0.0, 0.5, 0.5, 0.0
        elif has_a:
            w[0, i], w[1, i], w[2, i], w[3, i] = -0.5, 1.5, 0.0, 0.0
        else:
            w[0, i], w[1, i], w[2, i], w[3, i] = 0.0, 1.0, 0.0, 0.0


@numba.njit(cache=True)
def volume_weights(head, kinds, taps, size):
    """The weights of a volume's passes end to end, laid out as `volume_layout`'s offsets:
    pass k cubic where kinds[k] (else linear), with tap taps[k] (None: the cubic's)."""
    out = np.empty(size)
    for k in range(head.shape[0]):
        at = head[k, 8]
        end = size if k + 1 == head.shape[0] else head[k + 1, 8]
        tap = CUBIC_TAP if taps is None else taps[k]
        _weights_into(out[at:end].reshape((4, (end - at) // 4)), head[k, 10], head[k, 11],
                      kinds[k] != 0, tap)
    return out


@functools.lru_cache(maxsize=256)
def neighbours(n, s):
    """Positions (t-3s, t-s, t+s, t+3s) of the decoded neighbours of the targets t = s, 3s,
    ... < n along a pass's axis, shaped (4, count); past the volume's edge the edge point
    repeats.  (Only in-volume neighbours get a non-zero weight; the repeat keeps reads safe.)"""
    t = np.arange(s, n, 2 * s)
    last = (n - 1) // (2 * s)
    e = np.clip(t // (2 * s) + np.arange(-1, 3)[:, None], 0, last)
    pos = 2 * s * e
    pos.flags.writeable = False
    return pos


# --- compiled pass kernels ---------------------------------------------------------------
# A pass's targets are visited in C order of the volume; the kernels work on flat views.
# Target (i0, i1, i2) of the pass's grid sits at start[a] + i_a * step[a]; j = i_axis is its
# index along the pass's axis, and its neighbour k is `off[k, j]` flat elements away.  No
# fastmath: numba emits separately rounded multiplies and adds, so the results are plain IEEE
# arithmetic (tests/test_interpolation.py checks them against a numpy reference).  Indices
# are cast to unsigned where they are known in range (no negative-index wraparound code).  Each
# kernel spells out the same three target loops: a shared numba generator measured 60 % slower.
_u = numba.uint64


def geometry(shape, p, known=None):
    """The arguments every pass kernel takes after the volumes: (known flat, base, grid, off).
    known marks points coded before the passes (None: none; the kernels skip the test)."""
    return (None if known is None else known.reshape(-1),) + _layout(tuple(shape), p)


@functools.lru_cache(maxsize=1024)
def _layout(shape, p):
    n = shape[p.axis]
    strides = (shape[1] * shape[2], shape[2], 1)
    t = np.arange(p.stride, n, 2 * p.stride)
    off = (neighbours(n, p.stride) - t) * strides[p.axis]
    start = [p.stride if a == p.axis else 0 for a in range(3)]
    step = [p.stride if a < p.axis else 2 * p.stride for a in range(3)]
    count = [len(range(start[a], shape[a], step[a])) for a in range(3)]
    grid = np.array([*count, *(st * sd for st, sd in zip(step, strides)), p.axis], np.int64)
    base = sum(st * sd for st, sd in zip(start, strides))
    off.flags.writeable = grid.flags.writeable = False
    return base, grid, off


@numba.njit(cache=True)
def pass_size(known, base, grid, off):
    """Number of the pass's targets that are not already known."""
    if known is None:
        return grid[0] * grid[1] * grid[2]
    n = 0
    for i0 in range(grid[0]):
        for i1 in range(grid[1]):
            f = base + i0 * grid[3] + i1 * grid[4]
            for i2 in range(grid[2]):
                n += not known[f + i2 * grid[5]]
    return n


GRADIENT_EDGES = (1.0, 4.0, 16.0)


@numba.njit(cache=True)
def gradient_thresholds(eb):
    """For each edge k of the gradient buckets, the smallest d >= 0 with fl(d / eb) >= k:
    comparing d with it equals comparing the rounded quotient with k (division is monotone),
    without a division per target."""
    out = np.empty(len(GRADIENT_EDGES))
    for i, k in enumerate(GRADIENT_EDGES):
        d = k * eb                                     # exact: eb <= 2^1000 (codec checks)
        while d > 0 and np.nextafter(d, 0.0) / eb >= k:
            d = np.nextafter(d, 0.0)
        out[i] = d
    return out


@numba.njit(cache=True, inline="always")
def _context(recon, qmag, lo, hi, level, edges):
    """Context of a target whose neighbours at t-s, t+s are lo, hi (see `pass_contexts`;
    edges: `gradient_thresholds`), and its neighbour-magnitude term."""
    return _context_of(np.float64(recon[lo]), np.float64(recon[hi]), qmag[lo], qmag[hi], level,
                       edges)


@numba.njit(cache=True, inline="always")
def _context_of(a, b, qa, qb, level, edges):
    """`_context` from the neighbours' values a, b and code magnitudes qa, qb."""
    m = min(qa + qb, 2)
    return level * 12 + m * 4 + _gradient(a, b, edges), m


@numba.njit(cache=True, inline="always")
def _gradient(a, b, edges):
    """The local gradient bucket of a target whose neighbours at t-s, t+s are a, b."""
    d = abs(b - a)
    return int(d >= edges[0]) + int(d >= edges[1]) + int(d >= edges[2])


@numba.njit(cache=True)
def pass_contexts(recon, qmag, known, base, grid, off, level, edges, out, runs, run_bits):
    """Coding context of every target: level*12 + (neighbour code magnitudes, capped at 2)*4
    + local gradient bucket (|x(t+s) - x(t-s)| / eb >= 1, 4, 16).  runs[r] receives the
    largest neighbour-magnitude term of the targets r * 2^run_bits ... (r+1) * 2^run_bits - 1."""
    i = 0
    axis = grid[6]
    for i0 in range(grid[0]):
        for i1 in range(grid[1]):
            row = base + i0 * grid[3] + i1 * grid[4]
            for i2 in range(grid[2]):
                f = row + i2 * grid[5]
                if known is not None and known[_u(f)]:
                    continue
                j = _u(i0 if axis == 0 else (i1 if axis == 1 else i2))
                out[_u(i)], m = _context(recon, qmag, _u(f + off[1, j]), _u(f + off[2, j]),
                                         level, edges)
                runs[_u(i >> run_bits)] = max(runs[_u(i >> run_bits)], m)
                i += 1
    return i


@numba.njit(cache=True, inline="always")
def _predict(recon, resid, f, o, w, gain):
    """Sum of w[k] * (the neighbour o[k] elements from f), in order, plus (unless gain is None)
    gain times the sum of the coded residuals of the neighbours at t-s and t+s; a non-finite
    prediction is 0."""
    return _predict_with(recon, resid, f, o, w, gain, np.float64(recon[_u(f + o[1])]),
                         np.float64(recon[_u(f + o[2])]))


@numba.njit(cache=True, inline="always")
def _predict_with(recon, resid, f, o, w, gain, a, b):
    """`_predict` given the values a, b of the neighbours at t-s and t+s (the gradient context
    reads them too)."""
    fed = 0.0 if gain is None else gain * (resid[_u(f + o[1])] + resid[_u(f + o[2])])
    return _weigh(w, recon[_u(f + o[0])], a, b, recon[_u(f + o[3])], gain, fed)


@numba.njit(cache=True, inline="always")
def _weigh(w, x0, x1, x2, x3, gain, fed):
    """The prediction from the neighbours' values x0 ... x3 (in order) plus, unless gain is None,
    the feedback term fed (gain times the sum of the coded residuals at t-s and t+s); a
    non-finite prediction is 0.  The one place that fixes the order and rounding of a
    prediction: the encoder and every decoder loop must agree to the bit."""
    p = w[0] * x0
    p = p + w[1] * x1
    p = p + w[2] * x2
    p = p + w[3] * x3
    if gain is not None:            # None: no feedback (compiled without the term)
        p = p + fed
    return p if np.isfinite(p) else 0.0


@numba.njit(cache=True, inline="always")
def _taps(off, w, j):
    """Neighbour offsets and weights of the targets at position j along the axis."""
    return (off[0, j], off[1, j], off[2, j], off[3, j]), (w[0, j], w[1, j], w[2, j], w[3, j])


@numba.njit(cache=True, inline="always")
def _predict_at(recon, resid, f, j, off, w, gain):
    o, ww = _taps(off, w, j)
    return _predict(recon, resid, f, o, ww, gain)


@numba.njit(cache=True)
def pass_predict(recon, resid, known, base, grid, off, w, gain, out):
    """Predictions of the targets (weights w, shaped like off; residual feedback gain)."""
    i = 0
    axis = grid[6]
    for i0 in range(grid[0]):
        for i1 in range(grid[1]):
            row = base + i0 * grid[3] + i1 * grid[4]
            for i2 in range(grid[2]):
                f = row + i2 * grid[5]
                if known is None or not known[_u(f)]:
                    j = _u(i0 if axis == 0 else (i1 if axis == 1 else i2))
                    out[_u(i)] = _predict_at(recon, resid, f, j, off, w, gain)
                    i += 1
    return i


def pass_gather(volume, known, base, grid, off):
    """The targets' values of a (flat) volume, in pass order."""
    out = np.empty(pass_size(known, base, grid, off), volume.dtype)
    _copy(volume, known, base, grid, out, False)
    return out


def pass_scatter(volume, known, base, grid, off, values):
    """Inverse of `pass_gather`: write values to the targets of a (flat) volume."""
    _copy(volume, known, base, grid, values, True)


@numba.njit(cache=True)
def _copy(volume, known, base, grid, values, to_volume):
    i = 0
    for i0 in range(grid[0]):
        for i1 in range(grid[1]):
            row = base + i0 * grid[3] + i1 * grid[4]
            for i2 in range(grid[2]):
                f = row + i2 * grid[5]
                if known is None or not known[_u(f)]:
                    if to_volume:
                        volume[_u(f)] = values[_u(i)]
                    else:
                        values[_u(i)] = volume[_u(f)]
                    i += 1


@numba.njit(cache=True)
def pass_restore(recon, qmag, resid, known, base, grid, off, w, gain, q, escaped, verbatim, used,
                 twoeb, single):
    """Decode the targets: prediction + q * 2eb rounded to the dtype, or the next verbatim
    value where escaped; qmag gets the code magnitudes and resid (unless None: a chunk without
    feedback) the coded residuals q * 2eb.  Returns the verbatim values used."""
    i = 0
    axis = grid[6]
    for i0 in range(grid[0]):
        for i1 in range(grid[1]):
            row = base + i0 * grid[3] + i1 * grid[4]
            for i2 in range(grid[2]):
                f = row + i2 * grid[5]
                if known is not None and known[_u(f)]:
                    continue
                if escaped[_u(i)]:
                    recon[_u(f)] = verbatim[_u(used)]
                    qmag[_u(f)] = 2
                    used += 1
                else:
                    j = _u(i0 if axis == 0 else (i1 if axis == 1 else i2))
                    r = q[_u(i)] * twoeb
                    v = _predict_at(recon, resid, f, j, off, w, gain) + r
                    recon[_u(f)] = np.float64(np.float32(v)) if single else v
                    qmag[_u(f)] = min(abs(q[_u(i)]), 2)
                    if resid is not None:
                        resid[_u(f)] = r
                i += 1
    return used


@numba.njit(cache=True, inline="always")
def _restore(recon, qmag, resid, f, o, w, gain, v, twoeb, single):
    """Target f decoded from its code v (see `pass_restore`); o, w from `_taps`.  v None:
    code 0 of an unflagged run, where qmag keeps the 0 it starts with (resid, not cleared
    beforehand, gets its 0).  qmag None: not kept (see `pass_decode`)."""
    _restore_with(recon, qmag, resid, f, o, w, gain, v, twoeb, single,
                  np.float64(recon[_u(f + o[1])]), np.float64(recon[_u(f + o[2])]))


@numba.njit(cache=True, inline="always")
def _restore_with(recon, qmag, resid, f, o, w, gain, v, twoeb, single, a, b):
    """`_restore` given the neighbours' values a, b (`_predict_with`)."""
    r = 0.0 * twoeb if v is None else v * twoeb
    p = _predict_with(recon, resid, f, o, w, gain, a, b) + r
    recon[f] = np.float64(np.float32(p)) if single else p
    if v is not None and qmag is not None:
        qmag[f] = min(abs(v), 2)
    if resid is not None:
        resid[f] = r


@numba.njit(cache=True, inline="always")
def _row_taps(o, step):
    """Whether interior offsets o are (-3h, -h, h, 3h) for targets step = 2h apart along a row:
    then consecutive targets share neighbours, and `_restore_row` can gather them once."""
    h = step // 2
    return step == 2 * h and o[0] == -3 * h and o[1] == -h and o[2] == h and o[3] == 3 * h


@numba.njit(cache=True, inline="always")
def _restore_row(recon, resid, g0, count, step, w, gain, twoeb, single, buf, codes):
    """`_restore` of count targets g0, g0 + step, ... along a row whose taps are
    (-3h, -h, h, 3h) with weights w (`_row_taps`), with codes 0 (codes None) or codes[0:count]:
    their neighbours (and, with feedback, the neighbours' coded residuals) gathered once into
    buf, the predictions computed over those contiguous copies (a loop the compiler can
    vectorise) by `_weigh`, as `_predict_with` does, then stored.  Measured against restoring
    in place, target by target, the same bytes decoded: 1.18-1.20x per chunk on nearly empty
    BSSN chunks of 64^3 and 128^3, 1.02-1.12x in 32^3 chunks (shorter rows), the log-normal
    density at 1e-2 level."""
    e0 = g0 - _u(3 * (step // 2))
    for u in range(count + 3):                  # rows of buf: values, coded residuals, out
        buf[0, u] = np.float64(recon[e0 + _u(u) * step])
        if gain is not None:
            buf[1, u] = resid[e0 + _u(u) * step]
    r = 0.0 * twoeb
    for t in range(count):
        if codes is not None:
            r = codes[t] * twoeb
        fed = 0.0 if gain is None else gain * (buf[1, t + 1] + buf[1, t + 2])
        buf[2, t] = _weigh(w, buf[0, t], buf[0, t + 1], buf[0, t + 2], buf[0, t + 3], gain,
                           fed) + r
    for t in range(count):
        g = g0 + _u(t) * step
        recon[g] = np.float64(np.float32(buf[2, t])) if single else buf[2, t]
        if resid is not None:
            if codes is None:
                resid[g] = r
            else:
                resid[g] = codes[t] * twoeb


@numba.njit(cache=True, inline="always")
def _restore_stretch(recon, qmag, resid, f, j, n, step, off, w, lo, hi, inner, buffered, gain,
                     twoeb, single, buf, codes):
    """`_restore` of n targets f, f + step, ... along a row of an x pass, the first at index j
    along it, with codes 0 (codes None; qmag keeps its 0) or codes[0:n]: the interior part
    [lo, hi) (`_interior`; inner: its taps) row-buffered when `buffered` (`_row_taps`; buf: at
    least n + 3 columns), the edges target by target."""
    a_ = min(max(lo, j), j + n)
    b_ = max(min(hi, j + n), a_)
    if not buffered:
        a_ = b_ = j + n
    for jt in range(j, a_):
        _restore_edge(recon, qmag, resid, f, j, jt, step, off, w, gain, twoeb, single, codes)
    if b_ > a_:
        if codes is None:
            _restore_row(recon, resid, f + (a_ - j) * step, b_ - a_, step, inner[1], gain,
                         twoeb, single, buf, None)
        else:
            _restore_row(recon, resid, f + (a_ - j) * step, b_ - a_, step, inner[1], gain,
                         twoeb, single, buf, codes[a_ - j:])
    for jt in range(b_, j + n):
        _restore_edge(recon, qmag, resid, f, j, jt, step, off, w, gain, twoeb, single, codes)


@numba.njit(cache=True, inline="always")
def _restore_edge(recon, qmag, resid, f, j, jt, step, off, w, gain, twoeb, single, codes):
    """`_restore_stretch`'s target at index jt along the row, with its own taps."""
    o, ww = _taps(off, w, jt)
    if codes is None:
        _restore(recon, qmag, resid, f + (jt - j) * step, o, ww, gain, None, twoeb, single)
    else:
        _restore(recon, qmag, resid, f + (jt - j) * step, o, ww, gain, codes[jt - j], twoeb,
                 single)


@numba.njit(cache=True)
def _interior(off, w):
    """The positions lo <= j < hi along the axis, around the middle, whose offsets and weights
    are the middle one's (the interior, where `pass_decode` keeps them in registers)."""
    m = off.shape[1] // 2
    lo, hi = m, m + 1
    while lo > 0 and _same_taps(off, w, lo - 1, m):
        lo -= 1
    while hi < off.shape[1] and _same_taps(off, w, hi, m):
        hi += 1
    return _u(lo), _u(hi)


@numba.njit(cache=True)
def _same_taps(off, w, a, b):
    for k in range(4):
        if off[k, a] != off[k, b] or w[k, a] != w[k, b]:
            return False
    return True


@numba.njit(cache=True, inline="always")
def _stretch(known, grid, i2, i, mask):
    """How many targets from i2 on along the row (the i-th target of the pass) lie in the same
    run of mask + 1: the stretch `busiest_into` and `pass_decode` take at once (1 where some
    points are known: each is checked on its own)."""
    return 1 if known is not None else min(grid[2] - i2, mask + 1 - (i & mask))


ZERO_FIRST = 7 << (rans.PRECISION - 3)  # code 0 at least this likely (p >= 7/8): tried first
NZ_BITS = 4                    # `pass_decode` flags each block of 2^NZ_BITS code magnitudes


@numba.njit(**rans.NO_NRT)
def busiest_into(out, qmag, known, base, grid, off, run_bits, nz):
    """Largest neighbour-magnitude term of each run of 2^run_bits targets into out[run] (out:
    at least one element per run; returned).  Where no points are known, nz flags every block
    of 2^NZ_BITS elements of qmag that may hold a nonzero: a stretch whose neighbours all lie in
    clear blocks adds 0 without reading them.  qmag None (`magnitude_free`): all 0."""
    out[:((pass_size(known, base, grid, off) - 1) >> run_bits) + 1] = 0
    if qmag is None:
        return out
    mask = (1 << run_bits) - 1
    omin, omax = min(off[1].min(), off[2].min()), max(off[1].max(), off[2].max())
    i = 0
    axis, step = grid[6], _u(grid[5])
    for i0 in range(grid[0]):
        for i1 in range(grid[1]):
            row = base + i0 * grid[3] + i1 * grid[4]
            i2 = 0
            while i2 < grid[2]:                     # stretches of a run along the row
                start = row + i2 * grid[5]
                if known is not None and known[_u(start)]:
                    i2 += 1
                    continue
                n = _stretch(known, grid, i2, i, mask)
                r = i >> run_bits
                i += n
                i2 += n
                if out[r] == 2 or known is None and _clear(nz, start, n, grid[5], omin, omax,
                                                           qmag.size):
                    continue                        # nothing this stretch could add
                m = 0
                for t in range(n):
                    j = _u(i0 if axis == 0 else (i1 if axis == 1 else i2 - n + t))
                    g = _u(start) + _u(t) * step
                    m = max(m, qmag[_u(g + off[1, j])] + qmag[_u(g + off[2, j])])
                    if m >= 2:
                        break
                out[r] = max(out[r], min(m, 2))
    return out


@numba.njit(cache=True, inline="always")
def _clear(nz, f, n, step, omin, omax, size):
    """Whether the blocks of nz over [f + omin, f + (n - 1) step + omax] (all the neighbours a
    stretch of n targets from f can read) are clear; False when checking them would cost more
    than reading the neighbours."""
    lo = max(f + omin, 0) >> NZ_BITS
    hi = min(f + (n - 1) * step + omax, size - 1) >> NZ_BITS
    if hi - lo >= n:
        return False
    for b in range(lo, hi + 1):
        if nz[b]:
            return False
    return True


@numba.njit(**rans.NO_NRT)
def pass_decode(recon, qmag, resid, known, base, grid, off, w, gain, models, edges, twoeb, single,
                verbatim, used, run_bits, flag_context, nz, busiest, row_buf, state, words, cmap,
                alphabet, cum, cum_at, bucket, bucket_at, shift, zero_first):
    """Entropy-decode and restore a pass (format v3) in one loop over its targets, in runs of
    2^run_bits targets: at the start of a run its flag (context flag_context + the run's
    largest neighbour-magnitude term), then, if it is set, each target's code with its context
    (`pass_contexts`), its model a row of models (`level_models_into` of the pass's level).
    Restores as `pass_restore` does; state is the rANS state, updated.  zero_first (None or
    True; compiled apart): try code 0 first in the contexts where it is likely.  qmag None:
    the context map ignores code magnitudes (`magnitude_free`), which are then not kept.
    busiest: each run's largest neighbour-magnitude term (`busiest_into`); row_buf: at least
    (3, 2^run_bits + 3) floats.  Returns (status, next unused verbatim value)."""
    lo, hi = _interior(off, w)
    inner = _taps(off, w, lo)
    buffered = grid[6] == 2 and _row_taps(inner[0], grid[5])
    edge = (edges[0], edges[1], edges[2])              # in registers
    x, y, pos = state[0], state[1], np.int64(state[2])
    mask = (1 << run_bits) - 1
    flagged = 0
    i = 0
    axis, step = grid[6], _u(grid[5])
    for i0 in range(grid[0]):
        for i1 in range(grid[1]):
            row = base + i0 * grid[3] + i1 * grid[4]
            i2 = 0
            while i2 < grid[2]:
                f = _u(row + i2 * grid[5])
                if known is not None and known[f]:
                    i2 += 1
                    continue
                if i & mask == 0:                           # a new run: its flag
                    c = cmap[flag_context + busiest[i >> run_bits]]
                    if cum_at[c] < 0:
                        return rans.NO_TABLE, used
                    s, x, y = rans.step(x, y, c, cum, cum_at, bucket, bucket_at, shift)
                    y, pos = rans.refill(y, words, pos)
                    flagged = s - alphabet[c]
                    if flagged != 0 and flagged != 1:
                        return rans.BAD_FLAG, used
                # a stretch of targets along the row with one flag
                j = _u(i0 if axis == 0 else (i1 if axis == 1 else i2))
                n = _u(_stretch(known, grid, i2, i, mask))
                if axis == 2 and not flagged:   # codes all 0 along the axis: the interior
                    a_ = min(max(lo, j), j + _u(n))             # part [a_, b_) row-buffered,
                    b_ = max(min(hi, j + _u(n)), a_)            # the edges target by target
                    # (`_restore_stretch` inline: measured 5-7 % slower on nearly empty chunks)
                    if not buffered:
                        a_ = b_ = j + _u(n)
                    for jt in range(j, a_):
                        o, ww = _taps(off, w, jt)
                        _restore(recon, qmag, resid, f + (jt - j) * step, o, ww, gain, None, twoeb,
                                 single)
                    if b_ > a_:
                        _restore_row(recon, resid, f + (a_ - j) * step, b_ - a_, step, inner[1],
                                     gain, twoeb, single, row_buf, None)
                    for jt in range(b_, j + _u(n)):
                        o, ww = _taps(off, w, jt)
                        _restore(recon, qmag, resid, f + (jt - j) * step, o, ww, gain, None, twoeb,
                                 single)
                    i += n
                    i2 += n
                    continue
                # else the stretch shares one set of taps
                if axis == 2 and not (lo <= j and j < hi):
                    n = _u(1)                               # an edge target: its own taps
                elif axis == 2:
                    n = min(n, hi - j)
                o, ww = inner if lo <= j and j < hi else _taps(off, w, j)
                i += n
                i2 += n
                if not flagged:
                    for g in range(f, f + n * step, step):
                        _restore(recon, qmag, resid, g, o, ww, gain, None, twoeb, single)
                    continue
                for g in range(f, f + n * step, step):
                    lo_, hi_ = _u(g + o[1]), _u(g + o[2])
                    a, b = np.float64(recon[lo_]), np.float64(recon[hi_])   # read once
                    if qmag is None:                        # rows m * 4 + g share models
                        c = _u(_gradient(a, b, edge))
                    else:
                        c, _ = _context_of(a, b, qmag[lo_], qmag[hi_], 0, edge)  # in level
                        c = _u(c)                           # (no negative-index fix-up)
                    if models[c, 0] < 0:
                        return rans.NO_TABLE, used
                    if zero_first is not None:              # code 0 (symbol K) first
                        zero, x, y = rans.step_if(x, y, models[c, 4], models[c, 5])
                        if zero:
                            y, pos = rans.refill(y, words, pos)  # qmag, resid, nz keep 0
                            _restore_with(recon, qmag, resid, g, o, ww, gain, None, twoeb, single,
                                          a, b)
                            continue
                    s, x, y = rans.step_at(x, y, models[c, 0], models[c, 1], models[c, 2], cum,
                                           bucket)
                    y, pos = rans.refill(y, words, pos)
                    k = models[c, 3]
                    v = s - k
                    if v <= k:
                        _restore_with(recon, qmag, resid, g, o, ww, gain, v, twoeb, single, a, b)
                        if qmag is not None:
                            nz[g >> _u(NZ_BITS)] |= v != 0
                    elif used < verbatim.size:              # the escape symbol 2K+1
                        recon[g] = verbatim[used]
                        if qmag is not None:
                            qmag[g], nz[g >> _u(NZ_BITS)] = 2, 1
                        if resid is not None:
                            resid[g] = 0.0
                        used += 1
                    else:
                        return rans.VERBATIM_SHORT, used
    if pos > words.size:
        return rans.EXHAUSTED, used
    state[0], state[1], state[2] = x, y, np.uint64(pos)
    return rans.OK, used


GAP_MAX = 256                  # (format v5) a gap symbol g < GAP_MAX: g codes 0, then a non-zero
                               # code; g = GAP_MAX: that many codes 0, then another gap symbol;
                               # the escape symbol: the rest of the pass's codes are 0


@numba.njit(cache=True, inline="always")
def _gradient_at(recon, f, t, along, o, off, w, lo, hi, edges):
    """The gradient bucket of target f, index t along its row, whose neighbours at t-s and
    t+s are o[1] and o[2] elements away (o: the row's offsets; along x, index t's own)."""
    if along and not (lo <= t and t < hi):
        o = _taps(off, w, t)[0]
    return _gradient(np.float64(recon[_u(f + o[1])]), np.float64(recon[_u(f + o[2])]), edges)


@numba.njit(**rans.NO_NRT)
def pass_decode_gaps(recon, resid, base, grid, off, w, gain, models, edges, twoeb, single,
                     verbatim, used, gap_context, row_buf, codes, escaped, state, words, cmap,
                     alphabet, cum, cum_at, bucket, bucket_at, shift):
    """`pass_decode` for a chunk coded in zero gaps (format v5; no known points, a context map
    free of code magnitudes): at the pass's start and after each non-zero code, a gap symbol
    (context gap_context + the gradient bucket of the next target, capped at 2; see GAP_MAX)
    says how many targets have code 0 before the next non-zero one, whose code follows in its
    context.  As contexts depend on earlier passes only, each row's codes are decoded first
    and the row is then restored in one go, without a branch per target.  models: the level's
    (`level_models_into`) in rows 0-11, 3 more rows that get the gap contexts' (the same
    columns).  Work arrays, at least a row long: row_buf (3 rows of row length + 3 floats),
    codes (zeros; left zero), escaped."""
    lo, hi = _interior(off, w)
    inner = _taps(off, w, lo)
    along = grid[6] == 2
    buffered = along and _row_taps(inner[0], grid[5])
    length = grid[2]
    edge = (edges[0], edges[1], edges[2])       # in registers
    x, y, pos = state[0], state[1], np.int64(state[2])
    zeros, due, rest = 0, False, False  # codes 0 to skip, then a non-zero one / all the rest
    axis, step = grid[6], _u(grid[5])
    for r in range(3):                          # the gap contexts' models: rows 12-14
        c = cmap[gap_context + r]
        models[12 + r, 0], models[12 + r, 1] = cum_at[c], bucket_at[c]
        models[12 + r, 2], models[12 + r, 3] = shift[c], alphabet[c]
    for i0 in range(grid[0]):
        for i1 in range(grid[1]):
            row = _u(base + i0 * grid[3] + i1 * grid[4])
            j = _u(i0 if axis == 0 else i1)                     # (x passes: per target)
            row_taps = inner[0] if along or (lo <= j and j < hi) else _taps(off, w, j)[0]
            t = n_escaped = 0
            busy = False
            # Each step: the zeros still due, then (unless a code is due) a gap symbol at t,
            # then the non-zero code the gap leads to.  Whether a gap is 0 costs no branch
            # (the neighbours are read again where it is): only row ends and the rare long
            # gaps and escapes branch off.
            while not rest:
                if zeros >= length - t:                         # the zeros fill the row
                    zeros -= length - t
                    break
                t += zeros
                zeros = 0
                f = row + _u(t) * step
                if not due:                                     # a gap symbol
                    g = _u(12 + min(_gradient_at(recon, f, _u(t), along, row_taps, off, w,
                                                 lo, hi, edge), 2))
                    if models[g, 0] < 0:
                        return rans.NO_TABLE, used
                    s, x, y = rans.step_at(x, y, models[g, 0], models[g, 1], models[g, 2], cum,
                                           bucket)
                    y, pos = rans.refill(y, words, pos)
                    gap = s - models[g, 3]
                    if gap > models[g, 3]:                      # the escape symbol
                        rest = True
                        break
                    if gap < 0 or gap > GAP_MAX:
                        return rans.BAD_GAP, used
                    if gap == GAP_MAX:                          # GAP_MAX codes 0, no code
                        zeros = gap
                        continue
                    due = True
                    if gap >= length - t:                       # the code is in a later row
                        zeros = gap - (length - t)
                        break
                    t += gap
                    f = row + _u(t) * step
                c = _u(_gradient_at(recon, f, _u(t), along, row_taps, off, w, lo, hi, edge))
                if models[c, 0] < 0:                            # the non-zero code due at t
                    return rans.NO_TABLE, used
                s, x, y = rans.step_at(x, y, models[c, 0], models[c, 1], models[c, 2], cum,
                                       bucket)
                y, pos = rans.refill(y, words, pos)
                k = models[c, 3]
                if s - k <= k:
                    codes[t] = s - k
                    busy = True
                elif used + n_escaped < verbatim.size:          # the escape symbol 2K+1
                    escaped[n_escaped] = t
                    n_escaped += 1
                else:
                    return rans.VERBATIM_SHORT, used
                due = False
                t += 1
            if along and busy:     # (each call compiled for codes or none: no test per target)
                _restore_stretch(recon, None, resid, row, _u(0), _u(length), step, off, w, lo,
                                 hi, inner, buffered, gain, twoeb, single, row_buf, codes)
            elif along:
                _restore_stretch(recon, None, resid, row, _u(0), _u(length), step, off, w, lo,
                                 hi, inner, buffered, gain, twoeb, single, row_buf, None)
            else:                                               # one set of taps
                j = _u(i0 if axis == 0 else i1)
                o, ww = inner if lo <= j and j < hi else _taps(off, w, j)
                if busy:
                    for t in range(length):
                        _restore(recon, None, resid, row + _u(t) * step, o, ww, gain, codes[t],
                                 twoeb, single)
                else:
                    for t in range(length):
                        _restore(recon, None, resid, row + _u(t) * step, o, ww, gain, None,
                                 twoeb, single)
            for e in range(n_escaped):                          # their verbatim values
                g = row + _u(escaped[e]) * step
                recon[g] = verbatim[used]
                if resid is not None:
                    resid[g] = 0.0
                used += 1
            if busy:
                codes[:length] = 0
    if zeros or due:                                            # gaps past the pass's end
        return rans.BAD_GAP, used
    if pos > words.size:
        return rans.EXHAUSTED, used
    state[0], state[1], state[2] = x, y, np.uint64(pos)
    return rans.OK, used


@numba.njit(**rans.NO_NRT)
def level_models_into(models, level, cmap, alphabet, cum, cum_at, bucket_at, shift):
    """The models of a level's 12 contexts as `pass_decode` takes them, into models (12 x 8):
    cum_at, bucket_at, shift, alphabet K and, where code 0 has a frequency of at least
    ZERO_FIRST, its slots (start, frequency; else 0, 0).  Returns whether at least half the
    contexts with a model have them (`pass_decode`'s zero_first: where only a few contexts do,
    its check mispredicts on the others; measured up to 13 % slower)."""
    tables = fast = 0
    for r in range(12):
        c = cmap[12 * level + r]
        models[r, 0], models[r, 1], models[r, 2] = cum_at[c], bucket_at[c], shift[c]
        models[r, 3], models[r, 4], models[r, 5] = alphabet[c], 0, 0
        if cum_at[c] >= 0:
            tables += 1
            k = cum_at[c] + alphabet[c]
            if cum[k + 1] - cum[k] >= ZERO_FIRST:
                models[r, 4], models[r, 5] = cum[k], cum[k + 1] - cum[k]
                fast += 1
    return fast > 0 and 2 * fast >= tables


@functools.lru_cache(maxsize=64)
def volume_layout(shape):
    """The passes of a volume and their layout as `volume_decode` takes it: per pass (base,
    grid[0:7], start of its neighbour offsets in `offs`, level, length of its axis, stride),
    and the offsets end to end."""
    passes_ = tuple(passes(shape))
    layouts = [_layout(tuple(shape), p) for p in passes_]
    head = np.empty((len(passes_), 12), np.int64)
    at = 0
    for k, (p, (base, grid, off)) in enumerate(zip(passes_, layouts)):
        head[k] = base, *grid, at, p.level, shape[p.axis], p.stride
        at += off.size
    offs = np.concatenate([off.ravel() for _, _, off in layouts]) if layouts else np.zeros(0, np.int64)
    head.flags.writeable = offs.flags.writeable = False
    return passes_, head, offs


@numba.njit(cache=True)
def volume_decode(recon, qmag, resid, known, first, twoeb, head, offs, ws, gains, twoebs, edges,
                  single, verbatim, used, run_bits, flag_context, state, words, cmap, alphabet,
                  cum, cum_at, bucket, bucket_at, shift, gaps=False):
    """Decode a volume (format v3) in one compiled call: if `first`, point 0 (predicted as 0,
    context 0, bound twoeb / 2), then `pass_decode` for every pass: head and offs from
    `volume_layout`, the passes' weights end to end (laid out as offs), feedback gains (0:
    none) and doubled level bounds; flag contexts are flag_context + 3 * level + the busiest
    term.  qmag must start at 0 (unflagged targets leave it so), or be None where the context
    map ignores it (`magnitude_free`); resid (None: no feedback) is
    written at point 0 and every target up to the last pass with feedback, which are all that
    pass reads, so only its known points must start at 0.  Returns (status, next unused
    verbatim value).  gaps: the codes come in zero gaps (`pass_decode_gaps`; known and qmag
    must be None)."""
    if gaps and (known is not None or qmag is not None):
        return rans.BAD_GAP, used
    if first:
        symbol = np.empty(1, np.int32)
        status = rans.decode(state, words, np.zeros(1, np.int64), cmap, cum, cum_at, bucket,
                             bucket_at, shift, symbol)
        if status != rans.OK:
            return status, used
        v = symbol[0] - alphabet[cmap[0]]
        if resid is not None:
            resid[0] = 0.0                                  # (no coded residual fed back)
        if v <= alphabet[cmap[0]]:
            r = 0.0 + v * twoeb
            recon[0] = np.float64(np.float32(r)) if single else r
            if qmag is not None:
                qmag[0] = min(abs(v), 2)
        elif used < verbatim.size:                          # the escape symbol 2K+1
            recon[0] = verbatim[used]
            if qmag is not None:
                qmag[0] = 2
            used += 1
        else:
            return rans.VERBATIM_SHORT, used
    nz = np.zeros((recon.size >> NZ_BITS) + 1, np.uint8)  # see `busiest_into`
    if qmag is not None:
        nz[0] = qmag[0] != 0
    longest = max(head[:, 3].max(), 1 << run_bits) if head.shape[0] else 1
    work = (nz, np.empty((recon.size >> run_bits) + 1, np.int64),   # busiest terms of a pass
            np.empty((15, 8), np.int64),           # a level's models, gap models
            np.empty((3, longest + 3)),     # a row's or run's neighbours (`_restore_row`)
            np.zeros(longest, np.int64),    # a row's codes (0 where escaped; back to 0 after)
            np.empty(longest, np.int64))    # where the row's escaped targets are
    return _passes_decode(recon, qmag, resid, known, head, offs, ws, gains, twoebs, edges, single,
                          verbatim, used, run_bits, flag_context, *work, state, words, cmap,
                          alphabet, cum, cum_at, bucket, bucket_at, shift, gaps)


@numba.njit(**rans.NO_NRT)
def _passes_decode(recon, qmag, resid, known, head, offs, ws, gains, twoebs, edges, single,
                   verbatim, used, run_bits, flag_context, nz, busiest, models, row_buf, codes,
                   escaped, state, words, cmap, alphabet, cum, cum_at, bucket, bucket_at, shift,
                   gaps):
    """`volume_decode`'s passes, given its work arrays."""
    last = -1                                           # the last pass with feedback: the
    if resid is not None:                               # passes after it neither read coded
        for k in range(head.shape[0]):                  # residuals nor need to keep them
            if gains[k] != 0.0:
                last = k
    for k in range(head.shape[0]):
        base, grid, at, level = head[k, 0], head[k, 1:8], head[k, 8], head[k, 9]
        count = offs.size if k + 1 == head.shape[0] else head[k + 1, 8]
        off = offs[at:count].reshape((4, (count - at) // 4))
        w = ws[at:count].reshape((4, (count - at) // 4))
        fast = level_models_into(models, level, cmap, alphabet, cum, cum_at, bucket_at, shift)
        if gaps:
            gap_args = (models, edges, twoebs[k], single, verbatim, used, flag_context + 3 * level,
                        row_buf, codes, escaped, state, words, cmap, alphabet, cum, cum_at,
                        bucket, bucket_at, shift)
            if resid is None or k > last:
                status, used = pass_decode_gaps(recon, None, base, grid, off, w, None, *gap_args)
            elif gains[k] == 0.0:
                status, used = pass_decode_gaps(recon, resid, base, grid, off, w, None, *gap_args)
            else:
                status, used = pass_decode_gaps(recon, resid, base, grid, off, w, gains[k],
                                                *gap_args)
            if status != rans.OK:
                return status, used
            continue
        args = (edges, twoebs[k], single, verbatim, used, run_bits, flag_context + 3 * level, nz,
                busiest_into(busiest, qmag, known, base, grid, off, run_bits, nz), row_buf,
                state, words, cmap, alphabet, cum, cum_at, bucket, bucket_at, shift)
        # pass_decode compiled with and without its code-0 check, called directly (a wrapper
        # taking both measured 3 % slower per 32^3 chunk, when these loops still counted
        # references)
        if resid is None or k > last:
            status, used = (
                pass_decode(recon, qmag, None, known, base, grid, off, w, None, models, *args, True)
                if fast else
                pass_decode(recon, qmag, None, known, base, grid, off, w, None, models, *args, None))
        elif gains[k] == 0.0:
            status, used = (
                pass_decode(recon, qmag, resid, known, base, grid, off, w, None, models, *args, True)
                if fast else
                pass_decode(recon, qmag, resid, known, base, grid, off, w, None, models, *args, None))
        else:
            status, used = (
                pass_decode(recon, qmag, resid, known, base, grid, off, w, gains[k], models, *args,
                            True)
                if fast else
                pass_decode(recon, qmag, resid, known, base, grid, off, w, gains[k], models, *args,
                            None))
        if status != rans.OK:
            return status, used
    return rans.OK, used


@numba.njit(cache=True)
def chunk_decode(codes, octave, cmap, out, qmag, resid, kinds, taps, gains, gain_unit, head, offs,
                 twoebs, edges, single, twoeb, verbatim, run_bits, flag_context, gaps):
    """The volumes out (variables, z, y, x) of a format v3 or later chunk predicted by interpolation
    alone, in one compiled call: its CODES section opened (codes: the bytes, octave: the table
    kind, cmap: the context map), then per volume the passes' weights (kinds, taps: one per
    pass of the chunk) and feedback gains (int8 / gain_unit) and `volume_decode`.  qmag and
    resid (None: no feedback; any contents) are work arrays of a volume's size.  gaps: the
    codes come in zero gaps (format v5, `pass_decode_gaps`).  Returns
    (stage, status, verbatim values used) as `entropy.check` takes them."""
    status, alphabet, words, state, cum, cum_at, bucket, bucket_at, shift = entropy.open_section(
        codes, octave)
    if status:
        return entropy.OPENING, status, 0
    args = (cmap, out, resid, kinds, taps, gains, gain_unit, head, offs, twoebs, edges, single,
            twoeb, verbatim, run_bits, flag_context, alphabet, words, state, cum, cum_at, bucket,
            bucket_at, shift, gaps)
    if gaps or magnitude_free(cmap, flag_context):
        return _chunk_decode(None, *args)
    return _chunk_decode(qmag, *args)


@numba.njit(cache=True)
def magnitude_free(cmap, flag_context):
    """Whether a context map ignores code magnitudes: a target's model depends on its level and
    gradient bucket only, a flag's on its level only (every set but the full one), so that
    decoding needs neither the magnitudes nor the runs' busiest terms."""
    for level in range(3):
        for r in range(12):
            if cmap[12 * level + r] != cmap[12 * level + r % 4]:
                return False
        for r in range(3):
            if cmap[flag_context + 3 * level + r] != cmap[flag_context + 3 * level]:
                return False
    return True


@numba.njit(cache=True)
def _chunk_decode(qmag, cmap, out, resid, kinds, taps, gains, gain_unit, head, offs, twoebs,
                  edges, single, twoeb, verbatim, run_bits, flag_context, alphabet, words, state,
                  cum, cum_at, bucket, bucket_at, shift, gaps):
    """`chunk_decode` once the section is open; qmag None: see `magnitude_free`."""
    used = 0
    n = head.shape[0]
    for v in range(out.shape[0]):
        k = v * n
        ws = volume_weights(head, kinds[k:k + n], taps[k:k + n], offs.size)
        if qmag is not None:
            qmag[:] = 0                                     # (resid: see volume_decode)
        status, used = volume_decode(out[v].reshape(-1), qmag, resid, None, True, twoeb, head, offs,
                                     ws, gains[k:k + n] / gain_unit, twoebs, edges, single,
                                     verbatim, used, run_bits, flag_context, state, words, cmap,
                                     alphabet, cum, cum_at, bucket, bucket_at, shift, gaps)
        if status != rans.OK:
            return entropy.DECODING, status, used
    return entropy.ENDING, int(not rans.finished(state, words)), used

