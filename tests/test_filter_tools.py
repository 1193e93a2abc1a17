"""The plugin in HDF5's own tools and in a pure-C host (Debian's HDF5 1.10), against h5py
(HDF5 2.0): h5dump prints what h5py reads, h5repack -f UD= applies the filter, files cross
between C and h5py.  Skipped when the tools / compiler / headers are missing."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
import pyneuralfilter as nf  # noqa: E402
from pyneuralfilter.filter import NEURAL_FILTER, Neural, PLUGIN_PATH, parse_cd_values  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def tool_env():
    # No NEURALFILTER_PYTHON: the plugin must find the environment recorded at build time.
    env = dict(os.environ, HDF5_PLUGIN_PATH=PLUGIN_PATH)
    env.pop("NEURALFILTER_PYTHON", None)
    return env


def field(shape=(24, 20, 36), dtype=np.float32):
    g = np.meshgrid(*[np.linspace(0, 2, s) for s in shape], indexing="ij")
    return (np.sin(3 * g[0]) * np.cos(2 * g[1]) + g[2] ** 2).astype(dtype)


def h5dump_all(path, name):
    exe = shutil.which("h5dump")
    r = subprocess.run([exe, "-m", "%.17g", "-d", name, "--enable-error-stack", str(path)],
                       capture_output=True, text=True, env=tool_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    body = r.stdout.split("DATA {", 1)[1].rsplit("}", 3)[0]
    vals = []
    for line in body.splitlines():
        if "):" in line:
            vals += [float(x) for x in re.split(r",\s*", line.split("):", 1)[1].strip()) if x]
    return np.array(vals), r


needs_h5dump = pytest.mark.skipif(shutil.which("h5dump") is None,
                                  reason="h5dump missing (apt-get install hdf5-tools)")


@needs_h5dump
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_h5dump_prints_what_h5py_reads(tmp_path, dtype):
    p = tmp_path / "d.h5"
    a = field(dtype=dtype)
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=a, chunks=(8, 10, 12), **Neural(abs=1e-4))
    with h5py.File(p, "r") as f:
        mine = f["x"][...]
    theirs, r = h5dump_all(p, "/x")
    assert theirs.size == a.size, r.stdout[-2000:] + r.stderr
    np.testing.assert_array_equal(theirs, mine.ravel().astype(np.float64))
    assert f"FILTERS" not in r.stdout or str(NEURAL_FILTER) in r.stdout


@needs_h5dump
def test_h5dump_corrupt_chunk_reports(tmp_path):
    p = tmp_path / "c.h5"
    with h5py.File(p, "w") as f:
        ds = f.create_dataset("x", shape=(8, 8), dtype="f4", chunks=(8, 8), **Neural(abs=1e-3))
        ds.id.write_direct_chunk((0, 0), b"garbage, not a chunk")
    r = subprocess.run([shutil.which("h5dump"), "-d", "/x", "--enable-error-stack", str(p)],
                       capture_output=True, text=True, env=tool_env(), timeout=300)
    # HDF5 1.10 keeps the message on its error stack: h5dump prints it as the innermost entry.
    assert re.search(r"H5Zneural\.c line \d+ in filter\(\): neuralfilter: decompressing a chunk "
                     r"failed: CorruptChunkError", r.stderr), r.stderr


@pytest.mark.skipif(shutil.which("h5repack") is None, reason="h5repack missing (hdf5-tools)")
def test_h5repack_applies_filter(tmp_path):
    src, dst = tmp_path / "plain.h5", tmp_path / "packed.h5"
    a = field((32, 32, 32))
    with h5py.File(src, "w") as f:
        f.create_dataset("x", data=a, chunks=(16, 16, 16))
        f.create_dataset("i", data=np.arange(10))  # not chunked: h5repack leaves it
    cd = Neural(abs=1e-3).filter_options
    ud = f"UD={NEURAL_FILTER},0,{len(cd)}," + ",".join(map(str, cd))
    r = subprocess.run([shutil.which("h5repack"), "-f", f"x:{ud}", str(src), str(dst)],
                       capture_output=True, text=True, env=tool_env(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    with h5py.File(dst, "r") as f:
        ds = f["x"]
        fid, _flags, cdv, _ = ds.id.get_create_plist().get_filter(0)
        assert fid == NEURAL_FILTER
        p = parse_cd_values(cdv)
        assert (p.mode, p.bound, p.shape, p.itemsize) == ("abs", 1e-3, (16, 16, 16), 4)
        assert ds.id.get_storage_size() < a.nbytes / 2
        b = ds[...]
        assert np.abs(b - a).max() <= 1e-3
        assert (f["i"][...] == np.arange(10)).all()


def build_c_host(tmp_path):
    cc = shutil.which("gcc") or shutil.which("cc")
    inc = Path("/usr/include/hdf5/serial")
    if cc is None or not (inc / "hdf5.h").exists():
        pytest.skip("no C compiler or no HDF5 headers (apt-get install libhdf5-dev)")
    exe = tmp_path / "c_host"
    r = subprocess.run([cc, str(EXAMPLES / "c_host.c"), "-o", str(exe), f"-I{inc}",
                        "-L/usr/lib/x86_64-linux-gnu/hdf5/serial", "-lhdf5"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


def test_c_host_writes_h5py_reads(tmp_path):
    exe = build_c_host(tmp_path)
    p = tmp_path / "c.h5"
    r = subprocess.run([str(exe), "write", str(p), "0.001"], capture_output=True, text=True,
                       env=tool_env(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    i, j, k = np.meshgrid(np.arange(20), np.arange(30), np.arange(40), indexing="ij")
    expect = (i * 0.1 + 0.5 * j - 0.01 * k * k + (i * j % 7) * 0.03).astype(np.float32)
    with h5py.File(p, "r") as f:
        ds = f["c"]
        assert ds.id.get_create_plist().get_filter(0)[0] == NEURAL_FILTER
        assert ds.id.get_storage_size() < expect.nbytes
        b = ds[...]
    assert np.abs(b.astype(np.float64) - expect).max() <= 1e-3


def test_h5py_writes_c_host_reads(tmp_path):
    exe = build_c_host(tmp_path)
    p = tmp_path / "py.h5"
    a = field((17, 23, 31), np.float64)
    with h5py.File(p, "w") as f:
        f.create_dataset("g/x", data=a, chunks=(9, 10, 11), **Neural(rel=1e-4))
    with h5py.File(p, "r") as f:
        mine = f["g/x"][...]
    out = tmp_path / "x.raw"
    r = subprocess.run([str(exe), "read", str(p), "/g/x", str(out)], capture_output=True,
                       text=True, env=tool_env(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    theirs = np.fromfile(out, dtype=np.float64).reshape(a.shape)
    np.testing.assert_array_equal(theirs, mine)
