"""Multilevel interpolation: predict every point from already-decoded neighbours.

The grid is refined level by level (stride S/2, ..., 2, 1); within a level the new points
are predicted along z, then y, then x, each by cubic interpolation of the two nearest
decoded neighbours on each side (quadratic, linear or nearest where the volume ends).  All
weights are dyadic rationals and the arithmetic is fixed-order float64 numpy, so encoder and
decoder compute bit-identical predictions on any machine.
"""
import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pass:
    """The points predicted together: a strided sub-grid, interpolated along `axis`."""
    axis: int
    stride: int
    lines: tuple          # slices selecting the lines along `axis` (full extent on `axis`)
    targets: tuple        # slices selecting the predicted points inside those lines

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
            if shape[axis] <= stride:
                continue
            lines = tuple(slice(None) if ax == axis else
                          slice(None, None, stride if ax < axis else 2 * stride)
                          for ax in range(3))
            targets = tuple(slice(stride, None, 2 * stride) if ax == axis else slice(None)
                            for ax in range(3))
            yield Pass(axis, stride, lines, targets)
        stride //= 2


_CUBIC = (-1 / 16, 9 / 16, 9 / 16, -1 / 16)


@functools.lru_cache(maxsize=256)
def weights(n, s, cubic):
    """Weights of neighbours (t-3s, t-s, t+s, t+3s) for the targets t = s, 3s, ... < n,
    shaped (4, count): cubic where all four exist, else quadratic, linear or extrapolated;
    `cubic=False` asks for linear inside and the nearest value at the far end."""
    t = np.arange(s, n, 2 * s)
    has_a, has_c, has_d = t - 3 * s >= 0, t + s < n, t + 3 * s < n
    if not cubic:
        has_a = has_d = np.zeros(t.size, bool)
    w = np.zeros((4, t.size))
    w[:, has_a & has_c & has_d] = np.array(_CUBIC)[:, None]
    w[:, ~has_a & has_c & has_d] = np.array([0, 3 / 8, 6 / 8, -1 / 8])[:, None]
    w[:, has_a & has_c & ~has_d] = np.array([-1 / 8, 6 / 8, 3 / 8, 0])[:, None]
    w[:, ~has_a & has_c & ~has_d] = np.array([0, 1 / 2, 1 / 2, 0])[:, None]
    w[:, ~has_c & has_a] = np.array([-1 / 2, 3 / 2, 0, 0])[:, None]
    w[:, ~has_c & ~has_a] = np.array([0, 1, 0, 0])[:, None]
    w.flags.writeable = False
    return w


def stencil(volume, p):
    """The decoded neighbours (t-3s, t-s, t+s, t+3s) of the pass's targets, as four arrays
    shaped like the targets; past the volume's edge they repeat the edge value."""
    ax = p.axis
    even = volume[p.lines][tuple(slice(None, None, 2 * p.stride) if a == ax else slice(None)
                                 for a in range(3))]
    count = len(range(p.stride, volume.shape[ax], 2 * p.stride))
    along = lambda sl: tuple(sl if a == ax else slice(None) for a in range(3))
    shape = list(even.shape)
    shape[ax] = count + 3
    padded = np.empty(shape, volume.dtype)         # [edge, even..., edge, edge...]
    n = even.shape[ax]
    padded[along(slice(1, 1 + n))] = even
    padded[along(slice(0, 1))] = even[along(slice(0, 1))]
    padded[along(slice(1 + n, None))] = even[along(slice(n - 1, n))]
    return [padded[along(slice(k, k + count))] for k in range(4)]


def predict(volume, p, cubic=True, near=None):
    """Predictions of the pass's targets (float64) from the decoded values in `volume`:
    cubic, or linear between the two nearest neighbours.  `near`: the stencil, if at hand."""
    near = stencil(volume, p) if near is None else near
    w = weights(volume.shape[p.axis], p.stride, cubic)
    shape = [1, 1, 1]
    shape[p.axis] = -1
    with np.errstate(over="ignore", invalid="ignore"):
        pred = w[0].reshape(shape) * near[0]
        for k in (1, 2, 3):
            pred = pred + w[k].reshape(shape) * near[k]
    pred[~np.isfinite(pred)] = 0.0
    return pred
