"""In-situ tools: the latency model and the demo simulation (single rank and mpiexec)."""
import numpy as np
import pytest

MPI = pytest.importorskip("mpi4py.MPI")

from pyneuralfilter.insitu import demo, latency  # noqa: E402


@pytest.fixture(scope="module")
def measured():
    return latency.measure(latency.sample_blocks("bssn_chi", 64), rel=1e-3, repeats=1)


def test_latency_measures_every_mode(measured):
    meta = measured["_meta"]
    assert meta["blocks"] == 64 and meta["raw_bytes"] == 64 * 125 * 4
    assert measured["raw"]["max_err"] == 0
    assert measured["bounded"]["max_err"] <= meta["abs"]
    for m in ("fixed", "bounded"):
        assert measured[m]["bytes"] < measured["raw"]["bytes"]
        assert measured[m]["t_encode"] > 0 and measured[m]["t_decode"] > 0


def test_break_even_bandwidth_separates_the_links(measured):
    for m in ("fixed", "bounded"):
        b_star = measured[m]["break_even_Bps"]
        assert b_star > 0
        for bw in (b_star / 2, b_star * 2):      # compression pays exactly below B*
            faster = latency.exchange_time(measured[m], bw) < \
                latency.exchange_time(dict(measured[m], t_encode=0, t_decode=0,
                                           bytes=measured["_meta"]["raw_bytes"]), bw)
            assert faster == (bw < b_star)
        # the same condition in throughput form: 1/Tc + 1/Td < (1 - 1/ratio) / B
        raw = measured["_meta"]["raw_bytes"]
        tc, td = raw / measured[m]["t_encode"], raw / measured[m]["t_decode"]
        ratio = raw / measured[m]["bytes"]
        assert np.isclose((1 - 1 / ratio) / (1 / tc + 1 / td), b_star)


def test_latency_table_lists_every_link(measured):
    text = latency.table(measured)
    for name in latency.LINKS:
        assert f"| {name} |" in text
    assert "break-even" in text and text.count("compression pays") == 2


@pytest.mark.parametrize("order", [2, 4, 6])
def test_demo_single_rank_raw_has_no_drift(order):
    r = demo.run(MPI.COMM_SELF, steps=3, mode="raw", n=20, order=order)
    assert r["max_abs_drift"] == 0 and r["rel_l2_drift"] == 0
    assert r["halo"] == order // 2
    assert r["bytes_per_rank"][0]["messages"] == 18          # 6 faces x 3 steps


@pytest.mark.parametrize("mode", ["bounded", "fixed"])
def test_demo_single_rank_compressed_drifts_a_little(mode):
    r = demo.run(MPI.COMM_SELF, steps=3, mode=mode, n=20, rel=1e-3)
    assert 0 < r["max_abs_drift"] < 0.05 * r["field_range"]
    b = r["bytes_per_rank"][0]
    assert 0 < b["compressed"] < b["raw_messages"]
    if mode == "bounded":
        # one step: each ghost value is within eb and enters the update through the stencil's
        # off-centre weights, along at most 3 axes, times Courant^2 (plus float32 rounding)
        r1 = demo.run(MPI.COMM_SELF, steps=1, mode=mode, n=20, rel=1e-3)
        weight = sum(abs(c) for c in demo.STENCILS[r1["order"]][1:])
        assert r1["max_abs_drift"] <= r1["courant"] ** 2 * 3 * weight * r1["abs_bound"] + 1e-6
        assert r1["max_abs_drift"] > 0
    assert "drift after 3 steps" in demo.format_result(r)


@pytest.mark.mpi(min_size=2)
def test_demo_on_all_ranks_agrees_and_reports():
    comm = MPI.COMM_WORLD
    r = demo.run(comm, steps=4, mode="bounded", n=30, rel=1e-3)
    assert r["ranks"] == comm.size and len(r["bytes_per_rank"]) == comm.size
    assert comm.allgather(r["max_abs_drift"]) == [r["max_abs_drift"]] * comm.size
    assert 0 < r["max_abs_drift"] < 0.05 * r["field_range"]
    raw = demo.run(comm, steps=4, mode="raw", n=30)
    assert raw["max_abs_drift"] == 0


@pytest.mark.slow
def test_bench_insitu_quick(tmp_path):
    """Smoke run of benchmarks/bench_insitu.py --quick (one field, short demo; ~20 s)."""
    import os
    import subprocess
    import sys
    pytest.importorskip("zfpy")
    pytest.importorskip("pysz")
    if MPI.COMM_WORLD.size > 1:
        pytest.skip("starts its own mpiexec")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "insitu.md"
    env = dict(os.environ, PYTHONPATH=root)
    subprocess.run([sys.executable, os.path.join(root, "benchmarks", "bench_insitu.py"),
                    "--quick", "--out", str(out)], env=env, check=True, timeout=300,
                   stdout=subprocess.DEVNULL)
    text = out.read_text()
    assert "| bssn_chi | 0.001 |" in text and "InfiniBand 200G" in text
    assert text.count("drift after 10 steps") == 3
