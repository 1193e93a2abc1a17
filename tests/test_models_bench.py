"""Smoke test of benchmarks/bench_models.py --quick (needs the shipped default model)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytest.importorskip("torch")
pytest.importorskip("matplotlib")


@pytest.mark.slow
def test_bench_models_quick(tmp_path):
    from pyneuralfilter import models
    if "general" not in models.DEFAULT_MODELS:
        pytest.skip("no shipped general model")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_models.py"),
                        "--quick", "--out", str(tmp_path)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    for f in ("models.md", "models.json", "models.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    rows = json.loads((tmp_path / "models.json").read_text())["results"]
    expected = 10 + len(set(models.DEFAULT_MODELS.values()) - {models.load().hash})
    assert len(rows) == expected and len({r["hash"] for r in rows}) == expected
    assert any(r["pareto_bytes"] for r in rows) and any(r["pareto_speed"] for r in rows)
    assert rows[0]["variant"].startswith("baseline") and rows[0]["psnr"] > 15   # shipped model
    for r in rows:       # quick mode barely trains students: only check that numbers are sane
        assert 0 < r["psnr"] < 200 and r["decoder_bytes"] > 0 and r["decode_Mvalues_s"] > 0
        assert all(ratio > 1 for ratio in r["ratio_rel1e-3"].values())
    assert min(r["decoder_bytes"] for r in rows[1:]) < rows[0]["decoder_bytes"]
