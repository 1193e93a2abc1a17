"""Closed-loop error-bounded quantization (the SZ linear quantizer, checked value by value).

A value x predicted as p gets the integer code q = rint((x - p) / 2eb) and decodes to
cast(p + 2eb*q), rounded to the output dtype.  The encoder rebuilds exactly that value in
float64 and checks it against x; whenever the check fails (rounding, overflow, a code too
large, a non-finite prediction) x is stored verbatim instead.  Predictions downstream see the
rebuilt values, so encoder and decoder stay in lockstep.
"""
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
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        q = np.rint((x - pred) / (2.0 * eb))
        ok = np.abs(q) <= QMAX
        q = np.where(ok, q, 0.0)
        if free is not None:
            q[free] = 0.0
        recon = dequantize(pred, q, eb, dtype)
        ok &= np.abs(recon - x) <= eb
    escaped = ~ok if free is None else ~ok & ~free
    recon[escaped] = x[escaped]
    q = q.astype(np.int32)
    q[escaped] = 0
    return q, escaped, recon
