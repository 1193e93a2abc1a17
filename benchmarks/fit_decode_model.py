"""Refit the decode-time model the encoder uses to choose between run flags and zero gaps
(`pyneuralfilter.codec.DECODE_NS`, `GAP_DECODE_NS`).

Codes chunks of six fields (seed 1, 128^3; 32^3 and 64^3 chunks at three bounds) both ways,
times each decode (codec alone, one thread, best of 15), and fits, by least squares on the
relative error, run flags as call + target + symbol terms and zero gaps as call + target +
symbol + row terms (coefficients that come out negative are dropped).  Only chunks where the
choice is open enter the fit: interpolation-coded, with at most one gap symbol per target
(denser chunks are coded in run flags whatever the model says).  Usage:
``python benchmarks/fit_decode_model.py [--quick]`` (~10 min; --quick: 32^3 fields, a smoke
test).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fields import load_field  # noqa: E402

import pyneuralfilter as nf  # noqa: E402
from pyneuralfilter import codec  # noqa: E402

FIELDS = ("lognormal_rho", "kolmo_u", "grayscott_u", "grayscott_v", "bssn_chi", "bssn_Atxy")


def both_codings(x, eb):
    """(stats, chunk in run flags, chunk in zero gaps): stats = targets, run-flag symbols, gap
    symbols, rows of targets."""
    out = {}
    original = codec._Streams.codes

    def pick(which):
        def codes(self, targets):
            if self.gap_coder is None:              # (chunks with SWAE blocks: no choice)
                out["stats"] = None
                return self.coder.finish()
            runs, gaps = self.coder.finish(), self.gap_coder.finish()
            out["stats"] = (targets, self.coder.symbols, self.gap_coder.symbols, self.rows)
            return gaps if which == "gaps" else runs
        return codes
    try:
        chunks = []
        for which in ("runs", "gaps"):
            codec._Streams.codes = pick(which)
            chunks.append(nf.encode(x, abs=eb))
    finally:
        codec._Streams.codes = original
    return (out.get("stats"), *chunks)


def decode_time(data, rounds=15):
    for _ in range(3):
        nf.decode(data)
    best = np.inf
    for _ in range(rounds):
        t = time.perf_counter()
        nf.decode(data)
        best = min(best, time.perf_counter() - t)
    return best


def fit(features, times):
    """Least squares of times on features, relative error, negative coefficients dropped."""
    keep = np.ones(features.shape[1], bool)
    while True:
        a = features[:, keep] / times[:, None]
        coef = np.zeros(features.shape[1])
        coef[keep] = np.linalg.lstsq(a, np.ones(len(times)), rcond=None)[0]
        if (coef >= 0).all():
            rel = features @ coef / times - 1
            return coef, np.sqrt(np.mean(rel ** 2)), np.abs(rel).max()
        keep &= coef > 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, per_size = (32, {16: 2, 32: 1}) if args.quick else (128, {32: 3, 64: 2})
    rng = np.random.default_rng(0)
    rows = []
    for name in FIELDS:
        f = load_field(name, n)
        for rel in (1e-2, 1e-3, 1e-4):
            eb = rel * float(f.max() - f.min())
            for c, count in per_size.items():
                for _ in range(count):
                    o = rng.integers(0, n - c + 1, 3)
                    x = np.ascontiguousarray(f[o[0]:o[0] + c, o[1]:o[1] + c, o[2]:o[2] + c])
                    stats, runs, gaps = both_codings(x, eb)
                    if stats is None or runs == gaps:
                        continue                # not coded by interpolation
                    t_runs, t_gaps = decode_time(runs), decode_time(gaps)
                    rows.append((*stats, t_runs, t_gaps))
                    print(f"{name} {rel:g} {c}^3: targets, symbols (runs, gaps), rows {stats}; "
                          f"decode {t_runs * 1e6:.0f} / {t_gaps * 1e6:.0f} us", flush=True)
    r = np.array(rows, float)
    targets, run_symbols, gap_symbols, nrows, t_runs, t_gaps = r.T
    open_ = gap_symbols <= targets
    print(f"fitted on {open_.sum()} of {len(r)} chunks (at most one gap symbol per target)")
    one = np.ones(open_.sum())
    for label, features, times, names in (
            ("DECODE_NS", np.c_[one, targets[open_], run_symbols[open_]], t_runs[open_],
             ("call", "target", "symbol")),
            ("GAP_DECODE_NS", np.c_[one, targets[open_], gap_symbols[open_], nrows[open_]],
             t_gaps[open_], ("call", "target", "symbol", "row"))):
        coef, rms, worst = fit(features, times)
        ns = coef * 1e9
        print(f"{label} = ({', '.join(f'{v:.3g}' for v in ns)})  # ns per "
              f"{', '.join(names)}; rms error {100 * rms:.1f} %, worst {100 * worst:.0f} %")


if __name__ == "__main__":
    main()
