"""VTKHDF ImageData writer: layout VTK expects, values within the bound."""
import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
from pyneuralfilter import vtkhdf  # noqa: E402
from pyneuralfilter.filter import NEURAL_FILTER  # noqa: E402


def test_write_image(tmp_path):
    nz, ny, nx = 12, 20, 28
    g = np.meshgrid(np.linspace(0, 1, nz), np.linspace(0, 1, ny), np.linspace(0, 1, nx),
                    indexing="ij")
    a = (np.sin(3 * g[0]) + g[1] * g[2]).astype(np.float32)
    b = np.cos(2 * g[2]).astype(np.float64)
    p = vtkhdf.write_image(tmp_path / "v.hdf", {"a": a, "b": b}, spacing=(0.5, 0.25, 1),
                           origin=(1, 2, 3), abs=1e-3, chunks=(6, 10, 14))
    with h5py.File(p, "r") as f:
        r = f["VTKHDF"]
        assert list(r.attrs["Version"]) == [1, 0]
        t = r.attrs["Type"]
        assert (t.decode() if isinstance(t, bytes) else t) == "ImageData"
        assert list(r.attrs["WholeExtent"]) == [0, nx - 1, 0, ny - 1, 0, nz - 1]
        assert list(r.attrs["Spacing"]) == [0.5, 0.25, 1] and list(r.attrs["Origin"]) == [1, 2, 3]
        for k in ("a", "b"):
            assert r["PointData"][k].id.get_create_plist().get_filter(0)[0] == NEURAL_FILTER
    back = vtkhdf.read_image(p)
    assert np.abs(back["a"] - a).max() <= 1e-3 and np.abs(back["b"] - b).max() <= 1e-3


def test_write_image_errors(tmp_path):
    with pytest.raises(ValueError):
        vtkhdf.write_image(tmp_path / "e.hdf", {"a": np.zeros(5, "f4")})
    with pytest.raises(TypeError):
        vtkhdf.write_image(tmp_path / "e.hdf", {"a": np.zeros((2, 2, 2), "i4")})
    with pytest.raises(ValueError):
        vtkhdf.write_image(tmp_path / "e.hdf", {"a": np.zeros((2, 2, 2), "f4"),
                                               "b": np.zeros((2, 2, 3), "f4")})
