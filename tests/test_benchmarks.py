"""Smoke tests of the benchmark scripts.  bench_codec.py on its --quick config (24^3 fields): a few seconds
with numba's cache warm; on a fresh checkout the script first compiles every kernel it uses
(measured ~115 s on 2 cores), so the timeout only guards against a hang."""
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_codec.py")

pytest.importorskip("h5py")
pytest.importorskip("hdf5plugin")
pytest.importorskip("pysz")
pytest.importorskip("matplotlib")


def test_bench_codec_quick(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, SCRIPT, "--quick", "--out", str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    for f in ("codec.md", "codec.json", "rd.png", "rd_chunks.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    res = json.loads((tmp_path / "codec.json").read_text())
    runs = res["results"]
    names = {r["compressor"] for r in runs}
    assert {"SZ3 (hdf5plugin)", "SZ3 (pysz)", "ZFP accuracy (hdf5plugin)",
            "zstd+shuffle (lossless)"} <= names
    if res["neural"]["benchmarked"]:
        assert "neuralfilter" in names
    assert {r["chunks"] for r in runs} == {"whole", "16³"}
    for r in runs:
        ours = r["compressor"] == "neuralfilter" or r["compressor"].startswith("nf ")
        probs = r.get("problems") or []
        if ours:  # our bound is a contract
            assert not probs, r
        else:  # a peer may exceed its own bound (flagged in codec.md), but must run and decode
            assert all(p.startswith("BOUND VIOLATION") for p in probs), r
        if not r["lossless"] and ours:
            assert 0 <= r["err_over_eb"] <= 1, r
        assert r["ratio"] > 1 and r["comp_MBps"] > 0 and r["dec_MBps"] > 0
    md = (tmp_path / "codec.md").read_text()
    assert "## All results" in md and "SZ3 (pysz)" in md


def test_evaluate_flags_violations():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import numpy as np
    from bench_codec import evaluate
    x = np.linspace(0, 1, 1000, dtype=np.float32)
    y = x.copy()
    y[7] += np.float32(0.011)
    m, problems = evaluate(x, y, 0.01, lossless=False)
    assert problems and "BOUND VIOLATION" in problems[0] and m["err_over_eb"] > 1
    m, problems = evaluate(x, x.copy(), 0.01, lossless=False)
    assert not problems and m["err_over_eb"] == 0
    y = x.copy()
    y[3] = np.nan
    assert evaluate(x, y, 0.01, lossless=False)[1]
    assert evaluate(x, x + np.float32(1e-7), 0.01, lossless=True)[1]


def test_decoders_are_timed_in_the_same_rounds():
    """bench_codec times a configuration's decoders in rounds, each once per round in turn; a
    decoder that raises leaves the rounds with its exception as its result."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import peers
    finally:
        sys.path.pop(0)
    calls = []

    def fail():
        calls.append("c")
        raise ValueError("broken decoder")
    out, best = peers.timed_together([lambda: calls.append("a") or 1, lambda: calls.append("b") or 2,
                                      fail], max_reps=3)
    assert calls == ["a", "b", "c", "a", "b", "a", "b"]
    assert out[:2] == [1, 2] and isinstance(out[2], ValueError)
    assert all(0 <= t < 1 for t in best)


def test_fit_decode_model_quick():
    """benchmarks/fit_decode_model.py (the source of codec.DECODE_NS and GAP_DECODE_NS) runs on
    its --quick config and prints both models with non-negative terms."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "fit_decode_model.py"),
                        "--quick"], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    fitted = re.search(r"fitted on (\d+) of (\d+) chunks", p.stdout)
    assert fitted and 4 <= int(fitted[1]) <= int(fitted[2]), p.stdout[-2000:]
    for name, terms in (("DECODE_NS", 3), ("GAP_DECODE_NS", 4)):
        m = re.search(rf"^{name} = \(([^)]*)\)", p.stdout, re.M)
        values = [float(v) for v in m[1].split(",")]
        assert len(values) == terms and min(values) >= 0 and max(values) > 0, m[0]
