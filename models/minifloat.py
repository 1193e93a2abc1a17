"""Minifloat (FP8) grids: E4M3 (OCP 'fn' variant, max 448) and E5M2 (IEEE-like, max 57344).

numpy only.  Used to round weights to an 8-bit float grid and to turn stored 8-bit codes back into
exact values (every value is a dyadic rational, so the conversion is exact in float64).
"""
import numpy as np

FORMATS = {"e4m3": (4, 3, 7), "e5m2": (5, 2, 15)}   # exponent bits, mantissa bits, bias


def code_values(fmt):
    """float64 value of each of the 256 codes; NaN for codes that are not finite numbers."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown minifloat format {fmt!r}; choose one of {sorted(FORMATS)}")
    e_bits, m_bits, bias = FORMATS[fmt]
    codes = np.arange(256)
    sign = np.where(codes >> 7, -1.0, 1.0)
    e = (codes >> m_bits) & ((1 << e_bits) - 1)
    m = codes & ((1 << m_bits) - 1)
    mag = np.where(e == 0, np.ldexp(m.astype(np.float64), 1 - bias - m_bits),
                   np.ldexp((m + (1 << m_bits)).astype(np.float64), e - bias - m_bits))
    vals = sign * mag
    e_max = (1 << e_bits) - 1
    if fmt == "e4m3":                   # only S.1111.111 is NaN, no infinities
        vals[(e == e_max) & (m == (1 << m_bits) - 1)] = np.nan
    else:                               # IEEE style: top exponent is inf/NaN
        vals[e == e_max] = np.nan
    return vals


def max_value(fmt):
    return float(np.nanmax(code_values(fmt)))


def min_exponent(fmt):
    """log2 of the smallest positive (subnormal) value."""
    e_bits, m_bits, bias = FORMATS[fmt]
    return 1 - bias - m_bits


def to_codes(x, fmt):
    """Round float values (already scaled into the format's range) to the nearest code.

    Ties go to the code with the even mantissa (the lower |code| among equals).  Values beyond
    the range saturate to the largest finite value.
    """
    vals = code_values(fmt)
    pos = np.flatnonzero(np.isfinite(vals) & (np.arange(256) < 128))      # sign bit clear
    pv = vals[pos]
    order = np.argsort(pv, kind="stable")
    pos, pv = pos[order], pv[order]
    a = np.minimum(np.abs(np.asarray(x, dtype=np.float64)), pv[-1])
    hi = np.clip(np.searchsorted(pv, a), 1, len(pv) - 1)
    lo = hi - 1
    d_lo, d_hi = a - pv[lo], pv[hi] - a
    take_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (pos[hi] % 2 == 0))
    idx = np.where(take_hi, hi, lo)
    code = pos[idx].astype(np.uint8)
    neg = (np.asarray(x) < 0) & (pv[idx] > 0)
    return np.where(neg, code | np.uint8(128), code).astype(np.uint8)


def round_to_grid(x, fmt):
    """x rounded to the minifloat grid (float64)."""
    return code_values(fmt)[to_codes(x, fmt)]
