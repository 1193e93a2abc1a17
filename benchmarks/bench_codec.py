#!/usr/bin/env python
"""neuralfilter vs SZ3 (hdf5plugin filter and pysz), ZFP, SPERR and zstd, in one run on the same data.

For every field, size, chunk shape and relative bound, every compressor gets the same absolute bound
eb = rel * (max - min) of the whole field and the same chunks (one chunk = the whole field). Measured:
compression ratio, bits/value, PSNR (w.r.t. the field's range), max |error| / eb (checked against the
decoded values; > 1 is a bound violation and fails the run), compression and decompression MB/s
(raw bytes / time, one thread for everyone; the decoders of a configuration timed in the same
rounds) and both speeds relative to the SZ3 HDF5 filter in the same configuration. neuralfilter
runs in full and as ablations (predictor="interp", context_model=False, predictor="swae") so
that each learned component shows its gain.

Writes <out>/codec.md (tables), <out>/codec.json (raw results), <out>/rd.png (rate-distortion of the
largest size, one chunk) and <out>/rd_chunks.png (every size and chunk shape).

    PYTHONPATH=. python benchmarks/bench_codec.py                 # full run
    PYTHONPATH=. python benchmarks/bench_codec.py --quick --out /tmp/q
Exit status 1 when neuralfilter violated a bound or failed, or any compressor crashed or decoded
wrongly; a peer's own bound violation is flagged loudly in codec.md and on stderr but does not fail.
`--report-only` rewrites codec.md and the plots from an existing codec.json.
"""
import os

# One thread for every compressor (numba/OpenMP/BLAS/torch), set before any of them is imported.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
           "BLOSC_NTHREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fields  # noqa: E402
import peers  # noqa: E402

DEFAULT_FIELDS = ["bssn_chi", "bssn_alpha", "bssn_Atxy", "kolmo_u", "grayscott_u", "grayscott_v",
                  "lognormal_rho"]
QUICK = dict(sizes=[24], rels=[1e-2, 1e-3], fields=["bssn_chi", "kolmo_u", "grayscott_v"],
             chunks=["whole", "16"], gs_steps=100)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="grid points per axis")
    p.add_argument("--rels", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4],
                   help="relative bounds; eb = rel * (max - min) of the whole field")
    p.add_argument("--fields", nargs="+", default=DEFAULT_FIELDS)
    p.add_argument("--chunks", nargs="+", default=["whole", "64", "32"],
                   help="'whole' (one chunk) and/or edge lengths of cubic chunks; a chunk edge >= "
                        "the field's size is skipped (same as one chunk)")
    p.add_argument("--seed", type=int, default=1, help="field realization (models train on seed 0)")
    p.add_argument("--gs-steps", type=int, default=fields.GS_STEPS, help="Gray-Scott steps")
    p.add_argument("--ablations", choices=["all", "whole", "none"], default="all",
                   help="where to run the neuralfilter ablations: every chunk shape, one chunk only, "
                        "or not at all")
    p.add_argument("--no-neural", action="store_true", help="peers only")
    p.add_argument("--cache-dir", default=fields.DEFAULT_CACHE, help="field cache ('none': off)")
    p.add_argument("--quick", action="store_true",
                   help="tiny config for smoke tests/CI: 24^3, 3 fields, 2 bounds, whole + 16^3 "
                        "chunks, Gray-Scott 100 steps, no field cache")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--report-only", action="store_true",
                   help="do not measure: rewrite codec.md and the plots from <out>/codec.json")
    a = p.parse_args(argv)
    if a.quick:
        for k, v in QUICK.items():
            setattr(a, k, v)
        a.cache_dir = "none"
    if a.cache_dir == "none":
        a.cache_dir = None
    return a


# ---------------------------------------------------------------- metrics

def evaluate(orig, dec, eb, lossless):
    """Metrics of one decode and the list of problems found (empty = correct)."""
    problems = []
    if dec is None or dec.shape != orig.shape or dec.dtype != orig.dtype:
        got = "nothing" if dec is None else f"{dec.dtype}{dec.shape}"
        return dict(psnr=None, max_err=None, err_over_eb=None), [f"decoded {got}, expected "
                                                                 f"{orig.dtype}{orig.shape}"]
    o, d = orig.astype(np.float64), dec.astype(np.float64)
    fin = np.isfinite(o)
    if not np.array_equal(np.isfinite(d), fin) or not np.array_equal(
            np.isnan(d[~fin]), np.isnan(o[~fin])) or not np.array_equal(d[~fin & ~np.isnan(o)],
                                                                        o[~fin & ~np.isnan(o)]):
        problems.append("non-finite values not reproduced exactly")
    diff = np.abs(d[fin] - o[fin])
    diff = diff[np.isfinite(diff)]
    max_err = float(diff.max()) if diff.size else 0.0
    mse = float(np.mean(diff ** 2)) if diff.size else 0.0
    rng = float(o[fin].max() - o[fin].min()) if fin.any() else 0.0
    psnr = math.inf if mse == 0 else (20 * math.log10(rng) - 10 * math.log10(mse) if rng > 0
                                      else -math.inf)
    if lossless:
        if not np.array_equal(orig.view(np.uint8), dec.view(np.uint8)):
            problems.append("lossless codec changed bits")
        over = None
    else:
        over = max_err / eb
        if max_err > eb:
            problems.append(f"BOUND VIOLATION: max error {max_err:.6g} > eb {eb:.6g} "
                            f"({over:.6f} x eb, {int((diff > eb).sum())} values)")
    return dict(psnr=psnr, max_err=max_err, err_over_eb=over), problems


# ---------------------------------------------------------------- run

def _failed(rec, e):
    """Record a compressor's failure in its record (the run goes on and fails at the end)."""
    rec.update(error=f"{type(e).__name__}: {e}", problems=[f"failed: {e}"])
    print(f"!!! {rec['field']} {rec['n']} {rec['chunks']} rel={rec['rel']:g} {rec['compressor']} "
          f"FAILED: {rec['error']}", file=sys.stderr)


def chunk_configs(n, chunk_args):
    out = []
    for c in chunk_args:
        if c == "whole":
            out.append(("whole", (n, n, n)))
        elif int(c) < n:
            out.append((f"{int(c)}³", (int(c),) * 3))
    return out


def is_ours(name):
    return name == "neuralfilter" or name.startswith("nf ")


def failing(r):
    """Problems that fail the run: any problem of neuralfilter, any crash or wrong decode of a peer.
    A peer's own bound violation is reported loudly but is not our failure."""
    probs = r.get("problems") or []
    return [p for p in probs if is_ours(r["compressor"]) or not p.startswith("BOUND VIOLATION")]


def run(args):
    ok, why = (False, "--no-neural") if args.no_neural else peers.neural_status()
    codecs = peers.peers()
    neural = peers.NEURAL if ok else []
    if ok:
        try:
            import torch
            torch.set_num_threads(1)
        except ImportError:
            pass
    else:
        print(f"neuralfilter not benchmarked: {why}", file=sys.stderr)
    filter_ok, filter_why = peers.neural_filter_status() if ok else (False, why)
    through_hdf5 = [peers.NEURAL_HDF5] if filter_ok else []
    if ok and not filter_ok:
        print(f"nf HDF5 filter not benchmarked: {filter_why}", file=sys.stderr)
    # Warm-up (untimed): JIT compilation, model loading and lazy imports stay out of the timings.
    warm = fields.load_field(args.fields[0], 16, args.seed, None, min(args.gs_steps, 50))
    for codec in neural + through_hdf5 + codecs:
        for chunk in (warm.shape, (8, 8, 8)):
            try:
                codec.prepare(warm, 1e-3 * float(warm.max() - warm.min()), chunk).decode()
            except Exception:  # noqa: BLE001 - a real failure is recorded in the timed runs
                pass
    records, t_start = [], time.perf_counter()
    for n in args.sizes:
        for name in args.fields:
            t0 = time.perf_counter()
            data = fields.load_field(name, n, args.seed, args.cache_dir, args.gs_steps)
            t_gen = time.perf_counter() - t0
            lo, hi = float(data.min()), float(data.max())
            for chunk_label, chunk in chunk_configs(n, args.chunks):
                cs = list(codecs)
                if neural:
                    abl = args.ablations == "all" or (args.ablations == "whole"
                                                      and chunk_label == "whole")
                    cs = neural[:1] + through_hdf5 + (neural[1:] if abl else []) + cs
                for rel in args.rels:
                    eb = rel * (hi - lo)
                    group, ready = [], []
                    for codec in cs:
                        rec = dict(field=name, n=n, seed=args.seed, chunks=chunk_label,
                                   chunk_shape=list(chunk), rel=rel, eb=eb,
                                   compressor=codec.name, lossless=codec.lossless,
                                   raw_bytes=int(data.nbytes), values=int(data.size))
                        if name.startswith("grayscott"):
                            rec["gs_steps"] = args.gs_steps
                        group.append(rec)
                        try:
                            ready.append((rec, codec.prepare(data, eb, chunk)))
                        except Exception as e:  # noqa: BLE001 - record it, go on, fail at the end
                            _failed(rec, e)
                    # every decoder of the configuration timed in the same rounds
                    decoded, t_dec = peers.timed_together([p.decode for _, p in ready])
                    for (rec, p), out, t in zip(ready, decoded, t_dec):
                        if isinstance(out, Exception):
                            _failed(rec, out)
                            continue
                        m, problems = evaluate(data, out, eb, rec["lossless"])
                        mb = data.nbytes / 1e6
                        rec.update(m, nbytes=int(p.nbytes), ratio=data.nbytes / p.nbytes,
                                   bits_per_value=8 * p.nbytes / data.size,
                                   t_comp=p.t_comp, t_dec=t, comp_MBps=mb / p.t_comp,
                                   dec_MBps=mb / t, note=p.note, digest=p.digest,
                                   problems=problems)
                        if problems:
                            print(f"!!! {name} {n} {chunk_label} rel={rel:g} {rec['compressor']}: "
                                  + "; ".join(problems), file=sys.stderr)
                    ref = next((g for g in group if g["compressor"] == peers.SZ3_FILTER
                                and "ratio" in g), None)
                    for g in group:
                        if ref and "ratio" in g:
                            g["comp_vs_sz3f"] = g["comp_MBps"] / ref["comp_MBps"]
                            g["dec_vs_sz3f"] = g["dec_MBps"] / ref["dec_MBps"]
                    records += group
                    print(f"[{time.perf_counter() - t_start:7.1f}s] {name} {n}³ chunks {chunk_label} "
                          f"rel={rel:g}: " + ", ".join(
                              f"{g['compressor']}={g['ratio']:.1f}" for g in group if "ratio" in g),
                          file=sys.stderr, flush=True)
            print(f"    ({name} {n}³ loaded/generated in {t_gen:.1f}s)", file=sys.stderr)
    return records, time.perf_counter() - t_start, (ok, why)


# ---------------------------------------------------------------- report

def cpu_model():
    """The processor's name (speeds relative to SZ3 differ between CPU families)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.platform()


def versions():
    import h5py
    import hdf5plugin
    v = dict(python=platform.python_version(), numpy=np.__version__, h5py=h5py.version.version,
             hdf5=h5py.version.hdf5_version, hdf5plugin=hdf5plugin.version, cpu=cpu_model())
    try:
        from importlib.metadata import version
        v["pysz"] = version("pysz")
    except Exception:  # noqa: BLE001
        v["pysz"] = "?"
    try:
        import pysz
        algo = pysz.szConfig((4, 4, 4)).cmprAlgo
        names = [k for k in dir(pysz.szAlgorithm) if k.isupper()
                 and int(getattr(pysz.szAlgorithm, k)) == int(algo)]
        v["pysz_algorithm"] = names[0] if names else str(algo)
    except Exception:  # noqa: BLE001
        pass
    v["hdf5plugin_filters"] = sorted(f.__name__ for f in hdf5plugin.get_filters())
    try:
        import pyneuralfilter
        v["pyneuralfilter"] = getattr(pyneuralfilter, "__version__", "source tree")
    except Exception:  # noqa: BLE001
        pass
    return v


def fmt(x, spec=".3g"):
    if x is None:
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return format(x, spec)


def fmt_ratio(x):
    return "–" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.3g}")


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def write_markdown(path, args, records, elapsed, neural, vers):
    by = {(r["field"], r["n"], r["chunks"], r["rel"], r["compressor"]): r for r in records}
    configs = list(dict.fromkeys((r["field"], r["n"], r["chunks"]) for r in records))
    comps = list(dict.fromkeys(r["compressor"] for r in records))
    bad = [r for r in records if r.get("problems")]
    L = ["# neuralfilter codec benchmark", ""]
    L.append(f"Generated by `benchmarks/bench_codec.py` on {datetime.date.today()}; wall time "
             f"**{elapsed / 60:.1f} min** ({elapsed:.0f} s) on {platform.machine()}, "
             f"{os.cpu_count()} cores ({vers.get('cpu') or platform.platform()}).")
    L.append("")
    L.append(f"- Fields: seed {args.seed}, sizes {', '.join(f'{n}³' for n in args.sizes)}, "
             f"rel bounds {', '.join(f'{r:g}' for r in args.rels)}; eb = rel × (max − min) of the "
             f"whole field, the same eb for every compressor and every chunk. Gray–Scott after "
             f"{args.gs_steps} steps.")
    L.append("- Chunks: 'whole' = the field is one chunk; 'c³' = cubic chunks of edge c. Every "
             "compressor gets the same chunks: neuralfilter and pysz are called chunk by chunk, "
             "the HDF5 filters (ours too: 'nf HDF5 filter') get `chunks=` (size = dataset "
             "storage size, time = write + close / read_direct of an in-memory file with the "
             "chunk cache off).")
    L.append("- One thread for every compressor (OMP/OpenBLAS/MKL/numba/Blosc = 1, "
             f"torch.set_num_threads(1)); MB/s = raw MB / best of up to {peers.MAX_REPS} timed runs "
             f"(decompression: up to {peers.DEC_REPS}, within {peers.MIN_TIME:g} s, every "
             "compressor of a configuration timed "
             "in the same rounds, in turn, so that the machine's slowdowns hit them alike). "
             "×SZ3f = throughput relative to the SZ3 HDF5 filter in the same configuration. "
             "Absolute speeds are noisy; compare within a run.")
    L.append("- PSNR = 20 log10(max − min) − 10 log10(MSE); err/eb = max |decoded − original| / eb "
             "in float64 on the decoded values (must be ≤ 1; lossless zstd is checked bit for bit).")
    L.append(f"- Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()
                                          if k not in ("hdf5plugin_filters", "cpu")) + ". SZ3 builds compared: "
             f"the SZ3 filter bundled in hdf5plugin {vers['hdf5plugin']} (`hdf5plugin.SZ3("
             f"absolute=eb)`) and pysz {vers.get('pysz')} (SZ3's own binding, ABS mode, algorithm "
             f"{vers.get('pysz_algorithm', '?')}); ZFP = `hdf5plugin.Zfp(accuracy=eb)`, SPERR = "
             f"`hdf5plugin.Sperr(absolute=eb)` (point-wise error mode), zstd = "
             f"`hdf5plugin.Zstd(clevel=3)` + HDF5 shuffle (lossless reference).")
    if not neural[0]:
        L.append(f"- **neuralfilter not benchmarked** ({neural[1]}): peers only.")
    L.append("")
    L.append("## Bound check")
    L.append("")
    ours = [r for r in bad if is_ours(r["compressor"])]
    theirs = [r for r in bad if not is_ours(r["compressor"])]
    worst = max((r["err_over_eb"] for r in records if r.get("err_over_eb") is not None
                 and is_ours(r["compressor"])), default=None)
    if ours:
        L.append(f"**neuralfilter: {len(ours)} FAILED RUNS / BOUND VIOLATIONS:**")
        L.append("")
        groups = {}
        for r in ours:  # one line per compressor and kind of problem, a few examples each
            key = (r["compressor"], r["problems"][0].split(":")[0])
            groups.setdefault(key, []).append(r)
        for (comp, kind), rs in groups.items():
            ex = "; ".join(f"{r['field']} {r['n']}³ {r['chunks']} rel {r['rel']:g}: "
                           f"{'; '.join(r['problems'])}" for r in rs[:3])
            L.append(f"- **{comp}: {len(rs)} runs ({kind})**, e.g. {ex}"
                     + (f" (+{len(rs) - 3} more, see codec.json)" if len(rs) > 3 else ""))
        L.append("")
    elif any(is_ours(r["compressor"]) for r in records):
        L.append(f"neuralfilter (all variants): every decode verified within the bound "
                 f"(worst max error {fmt(worst, '.6f')} × eb).")
        L.append("")
    if theirs:
        L.append(f"**Peers: {len(theirs)} runs with problems** (a peer's own bound violation is "
                 f"flagged here but does not fail the run):")
        L.append("")
        for r in theirs:
            L.append(f"- **{r['field']} {r['n']}³ chunks {r['chunks']} rel {r['rel']:g} "
                     f"{r['compressor']}: {'; '.join(r['problems'])}**")
        if any(r["compressor"].startswith("SPERR") for r in theirs):
            L.append("- SPERR note: hdf5plugin stores SPERR's tolerance as a fixed-point log2 "
                     "rounded towards a tighter tolerance, so the tolerance SPERR got was ≤ eb; "
                     "the excess is in SPERR's own output (plausibly its float32 rounding; "
                     "not investigated further).")
        L.append("")
    else:
        L.append("Peers: every lossy peer within its bound, zstd bit-exact.")
        L.append("")
    notes = [r for r in records if r.get("note")]
    for r in notes:
        L.append(f"- note: {r['field']} {r['n']}³ {r['chunks']} rel {r['rel']:g} "
                 f"{r['compressor']}: {r['note']}")
    L.append("")

    rels = args.rels
    nf = "neuralfilter"
    if nf in comps:
        L.append("## Summary: neuralfilter vs SZ3")
        L.append("")
        L.append("Ratio of neuralfilter / best of the two SZ3 builds (hdf5plugin filter, pysz) at "
                 "the same bound and chunks, then decompression MB/s of neuralfilter / SZ3 filter.")
        L.append("")
        L.append("| field | n | chunks | " + " | ".join(f"ratio @{r:g}" for r in rels) + " | "
                 + " | ".join(f"dec ×SZ3f @{r:g}" for r in rels) + " |")
        L.append("|" + "---|" * (3 + 2 * len(rels)))
        wins = total = 0
        for f, n, c in configs:
            cells, dcells = [], []
            for rel in rels:
                a = by.get((f, n, c, rel, nf))
                szs = [by.get((f, n, c, rel, s)) for s in peers.SZ3_BUILDS]
                szr = [s["ratio"] for s in szs if s and "ratio" in s]
                if a and "ratio" in a and szr:
                    q = a["ratio"] / max(szr)
                    total += 1
                    wins += q >= 1
                    cells.append(f"{fmt_ratio(a['ratio'])} / {fmt_ratio(max(szr))} = "
                                 + (f"**{q:.2f}×**" if q >= 1 else f"{q:.2f}×"))
                    dcells.append(f"{a['dec_vs_sz3f']:.2f}×" if "dec_vs_sz3f" in a else "–")
                else:
                    cells.append("–")
                    dcells.append("–")
            L.append(f"| {f} | {n} | {c} | " + " | ".join(cells) + " | " + " | ".join(dcells) + " |")
        L.append("")
        L.append(f"neuralfilter ≥ best SZ3 in **{wins} of {total}** (field, size, chunks, bound) "
                 f"cases. Geomean ratio vs best SZ3: " + ", ".join(
                     f"{c} {fmt(geomean([by[(f, n, cc, rel, nf)]['ratio'] / max(by[(f, n, cc, rel, s)]['ratio'] for s in peers.SZ3_BUILDS if (f, n, cc, rel, s) in by and 'ratio' in by[(f, n, cc, rel, s)]) for f, n, cc in configs for rel in rels if cc == c and 'ratio' in by.get((f, n, cc, rel, nf), {}) and any('ratio' in by.get((f, n, cc, rel, s), {}) for s in peers.SZ3_BUILDS)]), '.2f')}×"
                     for c in dict.fromkeys(cc for _, _, cc in configs)) + ". Geomean decompression "
                 f"×SZ3 filter: {fmt(geomean([r.get('dec_vs_sz3f') for r in records if r['compressor'] == nf]), '.2f')}×"
                 f", compression: {fmt(geomean([r.get('comp_vs_sz3f') for r in records if r['compressor'] == nf]), '.2f')}×.")
        L.append("")
        abl = [c for c in comps if c.startswith("nf ")]
        if abl:
            L.append("## Ablations: what each learned component buys")
            L.append("")
            L.append("Ratios; gain = full / ablation (> 1: the component helps). "
                     "`interp` = no learned predictor, `context_model=False` = order-0 entropy "
                     "coding, `swae` = learned predictor on every block (no per-block choice). "
                     "'(same bytes)': the ablation wrote exactly the bytes of the full codec.")
            L.append("")
            L.append("| field | n | chunks | rel | neuralfilter | " + " | ".join(abl) + " | "
                     + " | ".join(f"gain vs {a[3:]}" for a in abl) + " |")
            L.append("|" + "---|" * (5 + 2 * len(abl)))
            for f, n, c in configs:
                for rel in rels:
                    a = by.get((f, n, c, rel, nf))
                    if not a or "ratio" not in a or not any((f, n, c, rel, x) in by for x in abl):
                        continue
                    rs = [by.get((f, n, c, rel, x), {}).get("ratio") for x in abl]
                    same = [a.get("digest") and by.get((f, n, c, rel, x), {}).get("digest")
                            == a["digest"] for x in abl]
                    L.append(f"| {f} | {n} | {c} | {rel:g} | {fmt_ratio(a['ratio'])} | "
                             + " | ".join(fmt_ratio(x) + (" (same bytes)" if sm else "")
                                          for x, sm in zip(rs, same)) + " | "
                             + " | ".join(f"{a['ratio'] / x:.3f}" if x else "–" for x in rs) + " |")
            L.append("")

    L.append("## Ratio at each bound, all compressors")
    L.append("")
    L.append("| field | n | chunks | rel | " + " | ".join(comps) + " |")
    L.append("|" + "---|" * (4 + len(comps)))
    for f, n, c in configs:
        for rel in rels:
            L.append(f"| {f} | {n} | {c} | {rel:g} | " + " | ".join(
                fmt_ratio(by.get((f, n, c, rel, x), {}).get("ratio")) for x in comps) + " |")
    L.append("")

    L.append("## All results")
    L.append("")
    hdr = ("| chunks | rel | compressor | ratio | bits/value | PSNR dB | err/eb | comp MB/s | "
           "dec MB/s | comp ×SZ3f | dec ×SZ3f |")
    for f, n in dict.fromkeys((f, n) for f, n, _ in configs):
        L.append(f"### {f} {n}³" + (f" (Gray–Scott, {args.gs_steps} steps)"
                                    if f.startswith("grayscott") else ""))
        L.append("")
        L.append(hdr)
        L.append("|" + "---|" * 11)
        for r in records:
            if r["field"] != f or r["n"] != n:
                continue
            if "ratio" not in r:
                L.append(f"| {r['chunks']} | {r['rel']:g} | {r['compressor']} | **FAILED: "
                         f"{r.get('error', '')}** |" + " |" * 7)
                continue
            e = r["err_over_eb"]
            es = "lossless" if r["lossless"] else (f"**{e:.4f} VIOLATION**" if e > 1 else f"{e:.4f}")
            L.append(f"| {r['chunks']} | {r['rel']:g} | {r['compressor']} | {fmt_ratio(r['ratio'])}"
                     f" | {r['bits_per_value']:.3f} | {fmt(r['psnr'], '.1f')} | {es} | "
                     f"{r['comp_MBps']:.1f} | {r['dec_MBps']:.1f} | {fmt(r.get('comp_vs_sz3f'), '.2f')}"
                     f" | {fmt(r.get('dec_vs_sz3f'), '.2f')} |")
        L.append("")
    with open(path, "w") as fh:
        fh.write("\n".join(L))


def plot_rd(path, records, configs, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    flds = list(dict.fromkeys(r["field"] for r in records))
    comps = list(dict.fromkeys(r["compressor"] for r in records))
    colors = {c: plt.cm.tab10(i % 10) for i, c in enumerate(comps)}
    from matplotlib.ticker import NullFormatter
    if len(configs) == 1:  # one config: fields on a grid of up to 3 columns
        nc = min(3, len(flds))
        cells = [(k // nc, k % nc, configs[0], f) for k, f in enumerate(flds)]
        nrows, ncols = -(-len(flds) // nc), nc
    else:  # one row per (size, chunks), one column per field
        cells = [(i, j, cfg, f) for i, cfg in enumerate(configs) for j, f in enumerate(flds)]
        nrows, ncols = len(configs), len(flds)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(cells):]:
        ax.set_visible(False)
    for i, j, (n, chunk), f in cells:
        if True:
            ax = axes[i][j]
            for c in comps:
                rs = sorted((r for r in records if r["field"] == f and r["n"] == n
                             and r["chunks"] == chunk and r["compressor"] == c and "ratio" in r),
                            key=lambda r: r["rel"])
                if not rs:
                    continue
                if rs[0]["lossless"]:
                    ax.axvline(rs[0]["bits_per_value"], color=colors[c], ls=":", label=c)
                    continue
                style = "-" if c == "neuralfilter" else ("--" if c.startswith("nf ") else "-.")
                ax.plot([r["bits_per_value"] for r in rs], [r["psnr"] for r in rs], style,
                        marker="o", ms=3, color=colors[c], label=c,
                        lw=2 if c == "neuralfilter" else 1)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{f} {n}³, chunks {chunk}", fontsize=9)
            ax.set_xlabel("bits/value")
            ax.set_ylabel("PSNR (dB)")
            ax.grid(True, which="both", alpha=0.3)
    h, lab = axes[0][0].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=min(len(lab), 5), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.5 / nrows / 3.4 * (1 + (len(lab) > 5)), 1, 1 - 0.3 / nrows / 3.4))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.report_only:
        with open(os.path.join(args.out, "codec.json")) as fh:
            saved = json.load(fh)
        args = argparse.Namespace(**{**vars(args), **saved["config"], "out": args.out})
        return report(args, saved["results"], saved["elapsed_s"],
                      (saved["neural"]["benchmarked"], saved["neural"]["reason"]), saved["versions"])
    records, elapsed, neural = run(args)
    vers = versions()
    with open(os.path.join(args.out, "codec.json"), "w") as fh:
        json.dump(dict(config={k: v for k, v in vars(args).items()}, elapsed_s=elapsed,
                       neural=dict(benchmarked=neural[0], reason=neural[1]), versions=vers,
                       results=records), fh, indent=1, default=str)
    return report(args, records, elapsed, neural, vers)


def report(args, records, elapsed, neural, vers):
    write_markdown(os.path.join(args.out, "codec.md"), args, records, elapsed, neural, vers)
    nmax = max(args.sizes)
    if any(r["n"] == nmax and r["chunks"] == "whole" for r in records):
        plot_rd(os.path.join(args.out, "rd.png"), records, [(nmax, "whole")],
                f"Rate–distortion, seed {args.seed}, {nmax}³, one chunk (single thread)")
    plot_rd(os.path.join(args.out, "rd_chunks.png"), records,
            list(dict.fromkeys((r["n"], r["chunks"]) for r in records)),
            f"Rate–distortion, seed {args.seed}, every size and chunk shape")
    bad = [r for r in records if r.get("problems")]
    fail = [r for r in records if failing(r)]
    print(f"done in {elapsed:.0f} s: {len(records)} runs, {len(bad)} with problems "
          f"({len(fail)} failing the run); wrote {args.out}/codec.md, codec.json, rd.png, "
          f"rd_chunks.png", file=sys.stderr)
    if bad:
        print(f"!!! {len(bad)} BOUND VIOLATIONS OR FAILURES ({len(fail)} of neuralfilter or "
              f"crashes/wrong decodes), see codec.md", file=sys.stderr)
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
