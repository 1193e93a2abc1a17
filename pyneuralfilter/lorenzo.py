"""The 3D Lorenzo predictor, closed loop, compiled with numba.

Each point is predicted from its seven already-decoded lower neighbours,
p = f(i-1,j,k) + f(i,j-1,k) - f(i-1,j-1,k) - f(i-1,j,k-1) - f(i,j-1,k-1) + f(i-1,j-1,k-1)
    + f(i,j,k-1)  (0 outside the volume), summed left to right in float64,
and quantized exactly as `quantizer.quantize` does.  The neighbour decoded just before comes
last, so a decoder's chain from value to value is one addition long (format v3; formats v1
and v2 added it third: `_predict_v2`).  Point by point, so it is a numba loop;
it beats interpolation on rough fields at tight bounds (turbulence).  Without fastmath numba
emits separately rounded multiplies and adds (no fused multiply-add), so results equal plain
IEEE arithmetic: tests/test_lorenzo.py checks them against a pure-Python reference.
"""
import numba
import numpy as np

from . import rans
from .quantizer import QMAX

_u = numba.uint64

# Lorenzo codes are grouped slice by slice (along the first axis); a code's context is the
# magnitude of the code at the same place in the previous slice: 0, 1, 2, 3-4, 5-8, 9+.
_EDGES = np.array([1, 2, 3, 5, 9])
CONTEXT_SETS = (np.arange(len(_EDGES) + 1, dtype=np.uint8), np.zeros(len(_EDGES) + 1, np.uint8))


_BUCKET = np.searchsorted(_EDGES, np.arange(_EDGES[-1] + 1), side="right")


def contexts(previous_q, previous_esc):
    """Contexts of a slice's codes from the codes of the previous slice."""
    out = np.empty(previous_q.shape, np.int64)
    _contexts(previous_q.reshape(-1), previous_esc.reshape(-1), _BUCKET, out.reshape(-1))
    return out


@numba.njit(cache=True)
def _contexts(q, esc, bucket, out):
    top = bucket.size - 1
    for i in range(q.size):
        out[i] = bucket[top] if esc[i] else bucket[min(abs(q[i]), top)]


@numba.njit(cache=True, inline="always")
def _predict(r, i, j, k):
    """Prediction of point (i-1, j-1, k-1) from r, the decoded values with a zero border in
    front of every axis (so that no index test is needed)."""
    p = (r[i - 1, j, k] + r[i, j - 1, k] - r[i - 1, j - 1, k] - r[i - 1, j, k - 1]
         - r[i, j - 1, k - 1] + r[i - 1, j - 1, k - 1] + r[i, j, k - 1])
    return p if np.isfinite(p) else 0.0


@numba.njit(cache=True, inline="always")
def _predict_v2(r, i, j, k):
    """`_predict` in the order of formats v1 and v2."""
    p = (r[i - 1, j, k] + r[i, j - 1, k] + r[i, j, k - 1] - r[i - 1, j - 1, k] - r[i - 1, j, k - 1]
         - r[i, j - 1, k - 1] + r[i - 1, j - 1, k - 1])
    return p if np.isfinite(p) else 0.0


@numba.njit(cache=True)
def _round(v, single):
    return np.float64(np.float32(v)) if single else v


@numba.njit(cache=True)
def encode(x, free, eb, single, q, escaped, recon):
    """Codes q and escape flags of volume x (float64, 3D); recon receives the decoded values."""
    twoeb = 2.0 * eb
    Z, Y, X = x.shape
    r = np.zeros((Z + 1, Y + 1, X + 1))
    for i in range(Z):
        for j in range(Y):
            for k in range(X):
                p = _predict(r, i + 1, j + 1, k + 1)
                v = x[i, j, k]
                qq = np.rint((v - p) / twoeb)
                ok = abs(qq) <= QMAX
                if not ok or free[i, j, k]:
                    qq = 0.0
                rv = _round(p + qq * twoeb, single)
                ok = ok and abs(rv - v) <= eb
                if not ok and not free[i, j, k]:
                    escaped[i, j, k] = True
                    q[i, j, k] = 0
                    r[i + 1, j + 1, k + 1] = v
                else:
                    q[i, j, k] = np.int32(qq)
                    r[i + 1, j + 1, k + 1] = rv
    recon[:] = r[1:, 1:, 1:]


@numba.njit(cache=True)
def decode_v2(q, escaped, verbatim, start, eb, single, recon):
    """Rebuild a volume of a format v1/v2 chunk from its codes; returns the index of the next
    unused verbatim value."""
    twoeb = 2.0 * eb
    Z, Y, X = recon.shape
    r = np.zeros((Z + 1, Y + 1, X + 1))
    used = start
    for i in range(Z):
        for j in range(Y):
            for k in range(X):
                if escaped[i, j, k]:
                    r[i + 1, j + 1, k + 1] = verbatim[used]
                    used += 1
                else:
                    r[i + 1, j + 1, k + 1] = _round(_predict_v2(r, i + 1, j + 1, k + 1)
                                                    + q[i, j, k] * twoeb, single)
    recon[:] = r[1:, 1:, 1:]
    return used


def padded(shape):
    """Shape of the work volume `decode` takes for a volume of `shape`."""
    return tuple(n + 1 for n in shape)


@numba.njit(cache=True)
def decode(state, words, cmap, alphabet, cum, cum_at, bucket, bucket_at, shift, verbatim, used,
           eb, single, recon, r):
    """Decode a volume of a format v3 chunk: entropy decoding (rans) and reconstruction in one
    loop.  r: a zero-filled work volume of shape `padded(recon.shape)`.  state: the rANS state,
    updated; returns (status, next unused verbatim value)."""
    twoeb = 2.0 * eb
    Z, Y, X = recon.shape
    context = np.zeros((Y, X), np.int64)          # of each code from the previous slice's
    top = _BUCKET[_BUCKET.size - 1]
    x, y, pos = state[0], state[1], np.int64(state[2])
    for i in range(Z):
        for j in range(Y):
            for k in range(X):
                c = cmap[context[j, k]]
                if cum_at[c] < 0:
                    return rans.NO_TABLE, used
                s, x, y = rans.step(x, y, c, cum, cum_at, bucket, bucket_at, shift)
                y, pos = rans.refill(y, words, pos)
                v = s - alphabet[c]
                if v > alphabet[c]:                  # the escape symbol 2K+1
                    if used >= verbatim.size:
                        return rans.VERBATIM_SHORT, used
                    r[i + 1, j + 1, k + 1] = verbatim[used]
                    used += 1
                    context[j, k] = top
                else:
                    r[i + 1, j + 1, k + 1] = _round(_predict(r, i + 1, j + 1, k + 1) + v * twoeb,
                                                    single)
                    context[j, k] = _BUCKET[min(abs(v), _BUCKET.size - 1)]
    if pos > words.size:
        return rans.EXHAUSTED, used
    state[0], state[1], state[2] = x, y, np.uint64(pos)
    recon[:] = r[1:, 1:, 1:]
    return rans.OK, used
