"""Closed-loop error-bounded quantization (the SZ linear quantizer, checked value by value).

A value x predicted as p gets the integer code q = rint((x - p) / 2eb) and decodes to
cast(p + 2eb*q), rounded to the output dtype.  The encoder rebuilds exactly that value in
float64 and checks it against x; whenever the check fails (rounding, overflow, a code too
large, a non-finite prediction) x is stored verbatim instead.  Predictions downstream see the
rebuilt values, so encoder and decoder stay in lockstep.  Compiled with numba (no fastmath:
plain IEEE arithmetic, the same as `dequantize`).
"""
import numba
import numpy as np

QMAX = 4095          # largest |q| coded; anything beyond is stored verbatim


def dequantize(pred, q, eb, dtype):
    """The decoded value of code q at prediction pred, in float64 (after dtype rounding)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return (pred + q * (2.0 * eb)).astype(dtype).astype(np.float64)


def quantize(x, pred, eb, dtype, free=None):
    """Codes for x (float64) predicted as pred.

    free marks positions whose value is not checked (non-finite inputs, restored later).
    Returns (q int32, escaped bool, recon float64): escaped positions hold x verbatim.
    """
    shape = np.broadcast_shapes(np.shape(x), np.shape(pred))
    x, pred = (np.ascontiguousarray(np.broadcast_to(a, shape), np.float64).reshape(-1)
               for a in (x, pred))
    free = None if free is None else np.ascontiguousarray(np.broadcast_to(free, shape)).reshape(-1)
    q, escaped, recon = np.empty(x.size, np.int32), np.empty(x.size, bool), np.empty(x.size)
    _quantize(x, pred, eb, np.dtype(dtype) == np.float32, free, q, escaped, recon)
    return q.reshape(shape), escaped.reshape(shape), recon.reshape(shape)


@numba.njit(cache=True)
def _quantize(x, pred, eb, single, free, q, escaped, recon):
    twoeb = 2.0 * eb
    for i in range(x.size):
        k = np.rint((x[i] - pred[i]) / twoeb)
        ok = abs(k) <= QMAX
        if not ok or (free is not None and free[i]):
            k = 0.0
        v = pred[i] + k * twoeb
        r = np.float64(np.float32(v)) if single else v
        ok = ok and abs(r - x[i]) <= eb
        if not ok and not (free is not None and free[i]):
            escaped[i], q[i], recon[i] = True, 0, x[i]
        else:
            escaped[i], q[i], recon[i] = False, np.int32(k), r
