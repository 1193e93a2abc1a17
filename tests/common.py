"""Shared checks for the codec tests."""
import numpy as np


def assert_within_bound(original, decoded, eb):
    """Every finite value within eb (checked in float64); NaN/Inf reproduced exactly."""
    assert decoded.dtype == original.dtype and decoded.shape == original.shape
    finite = np.isfinite(original)
    assert np.array_equal(np.isnan(original), np.isnan(decoded))
    assert np.array_equal(original[np.isinf(original)], decoded[np.isinf(original)])
    err = np.abs(decoded[finite].astype(np.float64) - original[finite].astype(np.float64))
    assert err.size == 0 or err.max() <= eb, f"max error {err.max()} > bound {eb}"


def absolute_bound(array, abs=None, rel=None):
    if abs is not None:
        return abs
    finite = array[np.isfinite(array)].astype(np.float64)
    with np.errstate(over="ignore"):
        span = finite.max() - finite.min() if finite.size else 0.0
    return 0.0 if rel == 0 else rel * span
