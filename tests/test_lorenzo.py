"""The numba Lorenzo kernels equal plain IEEE float64 arithmetic (no fused multiply-add)."""
import numpy as np

from pyneuralfilter import lorenzo


def reference_decode(q, escaped, verbatim, eb, single, v2=False):
    """The same recurrence in pure Python floats (IEEE double, each operation rounded), in the
    summation order of format v3 (or of v1/v2)."""
    Z, Y, X = q.shape
    r = np.zeros(q.shape)
    used = 0
    at = lambda i, j, k: float(r[i, j, k]) if min(i, j, k) >= 0 else 0.0
    for i in range(Z):
        for j in range(Y):
            for k in range(X):
                if escaped[i, j, k]:
                    r[i, j, k] = verbatim[used]
                    used += 1
                    continue
                if v2:
                    p = (at(i - 1, j, k) + at(i, j - 1, k) + at(i, j, k - 1) - at(i - 1, j - 1, k)
                         - at(i - 1, j, k - 1) - at(i, j - 1, k - 1) + at(i - 1, j - 1, k - 1))
                else:
                    p = (at(i - 1, j, k) + at(i, j - 1, k) - at(i - 1, j - 1, k) - at(i - 1, j, k - 1)
                         - at(i, j - 1, k - 1) + at(i - 1, j - 1, k - 1) + at(i, j, k - 1))
                v = p + float(q[i, j, k]) * (2.0 * eb)
                r[i, j, k] = float(np.float32(v)) if single else v
    return r


def test_kernels_match_plain_arithmetic():
    rng = np.random.default_rng(7)
    x = np.cumsum(rng.standard_normal((9, 10, 11)), axis=2) * 1e3 + rng.standard_normal() * 1e-3
    for single, eb in ((False, 0.0123456789), (True, 3.3e-3), (False, 7.77e-9)):
        data = x.astype(np.float32).astype(np.float64) if single else x
        free = np.zeros(x.shape, bool)
        q, esc, recon = np.zeros(x.shape, np.int32), np.zeros(x.shape, bool), np.zeros(x.shape)
        lorenzo.encode(data, free, eb, single, q, esc, recon)
        assert np.abs(recon - data).max() <= eb
        assert np.array_equal(recon, reference_decode(q, esc, data[esc], eb, single))
        out = np.zeros(x.shape)                    # the decoder of formats v1 and v2
        used = lorenzo.decode_v2(q, esc, data[esc], 0, eb, single, out)
        assert used == esc.sum()
        assert np.array_equal(out, reference_decode(q, esc, data[esc], eb, single, v2=True))


def test_contexts_are_the_magnitude_buckets_of_the_previous_slice():
    rng = np.random.default_rng(3)
    q = rng.integers(-40, 40, (30, 20)).astype(np.int32)
    esc = rng.random(q.shape) < 0.1
    want = np.searchsorted([1, 2, 3, 5, 9], np.where(esc, 1 << 20, np.abs(q)), side="right")
    assert np.array_equal(lorenzo.contexts(q, esc), want)
