"""Write VTKHDF ImageData files (``.hdf``) whose point-data arrays go through neuralfilter.

ParaView (5.10+, checked with Debian's 5.11) opens them with its VTKHDF reader when the plugin is
found (``HDF5_PLUGIN_PATH=<pyneuralfilter.PLUGIN_PATH>``) and ``pyneuralfilter`` plus its
dependencies are importable by ParaView's Python (e.g. ``PYTHONPATH=<site-packages>``)::

    from pyneuralfilter import vtkhdf
    vtkhdf.write_image("chi.hdf", {"chi": chi}, spacing=(0.25, 0.25, 0.25), rel=1e-4)

Arrays are numpy arrays of shape (nz, ny, nx) (C order, x varies fastest, VTK's point order), all
with the same shape; 2D arrays (ny, nx) are written as one z-slice.
"""
from __future__ import annotations

import numpy as np

from .filter import Neural

VTKHDF_VERSION = (1, 0)


def write_image(path, arrays, *, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), abs=None,
                rel=None, model=None, chunks=None, scalars=None):
    """Write ``arrays`` ({name: float32/float64 array}) as point data of one ImageData.

    Exactly one of ``abs`` / ``rel`` (as for :class:`pyneuralfilter.Neural`; neither means
    rel=1e-3). ``chunks``: HDF5 chunk shape (default: up to 32 per dimension). ``scalars``: the
    name of the active scalars (default: the first array)."""
    import h5py
    import pyneuralfilter  # noqa: F401  (registers the filter)

    if not arrays:
        raise ValueError("give at least one array")
    if abs is None and rel is None:
        rel = 1e-3
    opts = Neural(abs=abs, rel=rel, model=model)
    arrs = {}
    shape = None
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.ndim == 2:
            a = a[np.newaxis]
        if a.ndim != 3:
            raise ValueError(f"array {name!r} has shape {a.shape}: give (nz, ny, nx) or (ny, nx)")
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"array {name!r} has dtype {a.dtype}: only float32 and float64 go "
                            f"through neuralfilter")
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise ValueError(f"array {name!r} has shape {a.shape}, the others {shape}")
        arrs[name] = np.ascontiguousarray(a)
    nz, ny, nx = shape
    if chunks is None:
        chunks = tuple(min(s, 32) for s in shape)
    with h5py.File(path, "w") as f:
        root = f.create_group("VTKHDF")
        root.attrs.create("Version", np.array(VTKHDF_VERSION, dtype="i8"))
        root.attrs.create("Type", np.bytes_("ImageData"))  # fixed-length ASCII, as VTK expects
        root.attrs.create("WholeExtent", np.array([0, nx - 1, 0, ny - 1, 0, nz - 1], dtype="i8"))
        root.attrs.create("Origin", np.asarray(origin, dtype="f8"))
        root.attrs.create("Spacing", np.asarray(spacing, dtype="f8"))
        root.attrs.create("Direction", np.eye(3, dtype="f8").ravel())
        pd = root.create_group("PointData")
        pd.attrs.create("Scalars", np.bytes_(scalars or next(iter(arrs))))
        for name, a in arrs.items():
            pd.create_dataset(name, data=a, chunks=tuple(chunks), **opts)
    return path


def read_image(path):
    """{name: array} of a VTKHDF ImageData file's point data (through h5py)."""
    import h5py
    import pyneuralfilter  # noqa: F401

    with h5py.File(path, "r") as f:
        return {k: v[...] for k, v in f["VTKHDF/PointData"].items()}
