"""ParaView (Debian's pvpython 5.11, its own HDF5 1.10 and Python) reads a VTKHDF file written
through the filter.  Skipped when pvpython is absent (apt-get install paraview)."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
import pyneuralfilter  # noqa: E402
from pyneuralfilter import vtkhdf  # noqa: E402

SCRIPT = r"""
import sys, json
from paraview.simple import VTKHDFReader
from paraview import servermanager as sm
r = VTKHDFReader(FileName=sys.argv[1])
r.UpdatePipeline()
d = sm.Fetch(r)
pd = d.GetPointData()
out = {"dims": list(d.GetDimensions()), "arrays": {}}
for i in range(pd.GetNumberOfArrays()):
    a = pd.GetArray(i)
    out["arrays"][a.GetName()] = [a.GetValue(j) for j in range(a.GetNumberOfTuples())]
print("RESULT " + json.dumps(out))
"""


@pytest.mark.skipif(shutil.which("pvpython") is None, reason="pvpython missing (apt-get install "
                                                              "paraview)")
def test_pvpython_reads_vtkhdf(tmp_path):
    nz, ny, nx = 16, 18, 20
    g = np.meshgrid(*[np.linspace(0, 1, s) for s in (nz, ny, nx)], indexing="ij")
    a = (np.sin(3 * g[0]) * g[1] + g[2] ** 2).astype(np.float32)
    p = vtkhdf.write_image(tmp_path / "pv.hdf", {"chi": a}, abs=1e-3, chunks=(8, 9, 10))
    mine = vtkhdf.read_image(p)["chi"]
    script = tmp_path / "read.py"
    script.write_text(SCRIPT)
    # ParaView's own Python imports pyneuralfilter (and numpy, torch) from this environment.
    site = os.path.dirname(os.path.dirname(os.path.abspath(pyneuralfilter.__file__)))
    env = dict(os.environ, HDF5_PLUGIN_PATH=pyneuralfilter.PLUGIN_PATH,
               PYTHONPATH=os.pathsep.join([site] + [x for x in
                                                    os.environ.get("PYTHONPATH", "").split(
                                                        os.pathsep) if x]))
    r = subprocess.run(["pvpython", str(script), str(p)], capture_output=True, text=True,
                       env=env, timeout=600)
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert r.returncode == 0 and line, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(line[0][7:])
    assert out["dims"] == [nx, ny, nz]
    theirs = np.array(out["arrays"]["chi"], dtype=np.float32).reshape(nz, ny, nx)
    np.testing.assert_array_equal(theirs, mine)
    assert np.abs(theirs - a).max() <= 1e-3
