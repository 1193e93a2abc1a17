"""neuralfilter compress / decompress / info / demo (installed entry point's module)."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
import pyneuralfilter  # noqa: E402,F401
from pyneuralfilter.filter import NEURAL_FILTER, parse_cd_values  # noqa: E402


def run(*args, timeout=600):
    # cwd outside the source tree: `python -m` puts the cwd first on sys.path, and the tests
    # must run the installed package.
    return subprocess.run([sys.executable, "-m", "pyneuralfilter.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(os.path.abspath(pyneuralfilter.__file__)) + "/..")


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "in.h5"
    g = np.meshgrid(*[np.linspace(0, 2, 30)] * 3, indexing="ij")
    with h5py.File(p, "w") as f:
        f.attrs["title"] = "test"
        grp = f.create_group("fields")
        grp.attrs["time"] = 1.5
        grp.create_dataset("u", data=(np.sin(2 * g[0]) * g[1] + g[2]).astype(np.float32))
        d = grp.create_dataset("v", data=np.cos(g[0] + g[1]).astype(">f8"))
        d.attrs["units"] = "m/s"
        f["ids"] = np.arange(12, dtype=np.int32)
        f["scalar"] = 2.0
        f["link"] = h5py.SoftLink("/fields/u")
    return p


def test_compress_info_decompress(tmp_path, src):
    out, back = tmp_path / "c.h5", tmp_path / "d.h5"
    r = run("compress", src, out, "--abs", "1e-3", "--chunks", "16,16,16")
    assert r.returncode == 0, r.stderr
    lines = {l.split(":")[0]: l for l in r.stdout.splitlines()}
    for name in ("/fields/u", "/fields/v"):
        m = re.search(r"ratio ([\d.]+):1 .* max error (\S+) = ([\d.]+) x bound", lines[name])
        assert m, lines[name]
        assert float(m.group(1)) > 1 and float(m.group(3)) <= 1.0
    assert "copied unchanged" in lines["/ids"] and "copied unchanged" in lines["/scalar"]
    with h5py.File(src, "r") as f, h5py.File(out, "r") as g:
        assert g.attrs["title"] == "test" and g["fields"].attrs["time"] == 1.5
        assert g["fields/v"].attrs["units"] == "m/s"
        assert g.get("link", getlink=True).path == "/fields/u"
        assert (g["ids"][...] == f["ids"][...]).all() and g["scalar"][()] == 2.0
        for name in ("fields/u", "fields/v"):
            ds = g[name]
            assert ds.id.get_create_plist().get_filter(0)[0] == NEURAL_FILTER
            assert ds.chunks == (16, 16, 16)
            assert np.abs(ds[...] - f[name][...]).max() <= 1e-3
    r = run("info", out)
    assert r.returncode == 0, r.stderr
    assert re.search(r"/fields/u: .*neuralfilter.*abs=0.001.*model", r.stdout), r.stdout
    assert "/ids:" in r.stdout and "filters: none" in r.stdout
    r = run("decompress", out, back)
    assert r.returncode == 0, r.stderr
    with h5py.File(back, "r") as f, h5py.File(out, "r") as g:
        for name in ("fields/u", "fields/v"):
            assert f[name].id.get_create_plist().get_nfilters() == 0
            np.testing.assert_array_equal(f[name][...], g[name][...])
        assert (f["ids"][...] == np.arange(12)).all()


def test_compress_rel_default(tmp_path, src):
    out = tmp_path / "r.h5"
    r = run("compress", src, out)
    assert r.returncode == 0, r.stderr
    with h5py.File(out, "r") as g:
        p = parse_cd_values(g["fields/u"].id.get_create_plist().get_filter(0)[2])
        assert (p.mode, p.bound) == ("rel", 1e-3)


def test_cli_errors(tmp_path, src):
    r = run("compress", src, tmp_path / "x.h5", "--abs", "-1")
    assert r.returncode != 0 and "positive finite" in r.stderr
    r = run("compress", src, tmp_path / "x.h5", "--abs", "1", "--rel", "1")
    assert r.returncode != 0 and "not allowed with" in r.stderr
    r = run("info", tmp_path / "missing.h5")
    assert r.returncode != 0 and "error" in r.stderr


def test_demo(tmp_path):
    r = run("demo", "--size", "32", "--chunk", "16", "-o", tmp_path / "demo.h5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo passed" in r.stdout
    assert "bssn_chi" in r.stdout and "kolmo_u" in r.stdout
    if shutil.which("h5dump"):
        assert "identical to h5py's" in r.stdout, r.stdout
    else:
        assert "h5dump: not installed" in r.stdout


def test_models_lists_the_shipped_defaults():
    from pyneuralfilter import models
    r = run("models")
    assert r.returncode == 0, r.stderr
    for name, full_hash in models.DEFAULT_MODELS.items():
        assert re.search(rf"^{name}\s+{full_hash[:16]}\s", r.stdout, re.M), r.stdout
