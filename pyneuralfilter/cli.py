"""``neuralfilter`` command line: compress / decompress / info / demo (+ train, models hooks)."""
from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
import sys

import numpy as np

from .filter import NEURAL_FILTER, PLUGIN_PATH, Neural, describe, parse_cd_values


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _h5():
    import h5py
    import pyneuralfilter  # noqa: F401  (registers the filter with h5py)
    return h5py


def _parse_chunks(text):
    if text is None:
        return None
    try:
        c = tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--chunks {text!r}: give sizes like 32,32,32") from None
    if not c or min(c) < 1:
        raise argparse.ArgumentTypeError(f"--chunks {text!r}: sizes must be positive")
    return c


def _chunk_shape(shape, requested):
    """Requested chunk shape fitted to the dataset (last dims kept), else min(dim, 64)."""
    if requested is None:
        return tuple(max(1, min(int(s), 64)) for s in shape)
    req = tuple(requested)[-len(shape):]
    req = (1,) * (len(shape) - len(req)) + req
    return tuple(max(1, min(int(s), int(c))) for s, c in zip(shape, req))


def _chunk_slices(shape, chunks):
    ranges = [range(0, s, c) for s, c in zip(shape, chunks)]
    for start in itertools.product(*ranges):
        yield tuple(slice(o, min(o + c, s)) for o, c, s in zip(start, chunks, shape))


def _compressible(ds):
    """None if the dataset can go through the filter, else the reason it is copied as is."""
    if ds.dtype.kind != "f" or ds.dtype.itemsize not in (4, 8):
        return f"dtype {ds.dtype} is not float32/float64"
    if not 1 <= ds.ndim <= 4:
        return f"rank {ds.ndim} is not 1-4"
    if ds.size == 0:
        return "empty"
    return None


def _neural_filter_cd(ds):
    dcpl = ds.id.get_create_plist()
    for i in range(dcpl.get_nfilters()):
        fid, _flags, cd, _name = dcpl.get_filter(i)
        if fid == NEURAL_FILTER:
            return cd
    return None


def _filters(ds):
    dcpl = ds.id.get_create_plist()
    out = []
    for i in range(dcpl.get_nfilters()):
        fid, _flags, cd, name = dcpl.get_filter(i)
        out.append((fid, cd, name.decode(errors="replace") if isinstance(name, bytes) else name))
    return out


def _walk(group, prefix=""):
    """(path, object, link) for every link below group, in creation/name order, not following
    soft or external links."""
    import h5py
    for name in group:
        link = group.get(name, getlink=True)
        path = f"{prefix}/{name}"
        if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
            yield path, None, link
            continue
        obj = group[name]
        yield path, obj, link
        if isinstance(obj, h5py.Group):
            yield from _walk(obj, path)


def _copy_attrs(src, dst):
    for k, v in src.attrs.items():
        dst.attrs[k] = v


def _copy_tree(fin, fout, on_dataset, progress_desc):
    """Recreate fin in fout: groups + attributes + links copied, datasets via on_dataset."""
    import h5py
    _copy_attrs(fin, fout)
    for path, obj, link in _walk(fin):
        parent, _, name = path.rpartition("/")
        dparent = fout[parent or "/"]
        if obj is None:
            dparent[name] = link
        elif isinstance(obj, h5py.Group):
            g = dparent.create_group(name)
            _copy_attrs(obj, g)
        elif isinstance(obj, h5py.Dataset):
            on_dataset(path, obj, dparent, name)
        else:  # committed datatypes
            fin.copy(obj, dparent, name=name)


def _tqdm(total, desc):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency; keep working without it
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False,
                file=sys.stderr, disable=None)


def _write(src, dst, chunks, desc):
    """Copy src into dst chunk by chunk (each chunk goes through the filter once)."""
    bar = _tqdm(src.size * src.dtype.itemsize, desc)
    for sl in _chunk_slices(src.shape, chunks):
        a = np.asarray(src[sl], dtype=dst.dtype)
        dst[sl] = a
        if bar is not None:
            bar.update(a.nbytes)
    if bar is not None:
        bar.close()


def _check(src, dst, mode, bound, fill=0.0):
    """(max abs error, max error / bound) of dst (a freshly opened compressed dataset) against
    src.  For rel the bound of each chunk is bound x (max - min) of the chunk as the filter saw
    it: edge chunks are padded with the fill value."""
    chunks = dst.chunks
    max_err, worst = 0.0, 0.0
    for sl in _chunk_slices(src.shape, chunks):
        a = np.asarray(src[sl], dtype=np.float64)
        b = np.asarray(dst[sl], dtype=np.float64)
        err = float(np.max(np.abs(a - b)))
        if mode == "abs":
            eb = bound
        else:
            lo, hi = float(a.min()), float(a.max())
            if any((s.stop - s.start) < c for s, c in zip(sl, chunks)):
                lo, hi = min(lo, fill), max(hi, fill)
            eb = bound * (hi - lo)
        max_err = max(max_err, err)
        if eb > 0:
            worst = max(worst, err / eb)
        elif err > 0:
            worst = float("inf")
    return max_err, worst


# --------------------------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------------------------
def cmd_compress(args):
    h5py = _h5()
    kw = {"abs": args.abs} if args.abs is not None else {"rel": args.rel if args.rel is not None
                                                          else 1e-3}
    opts = Neural(model=args.model, **kw)
    done = []

    def on_dataset(path, ds, dparent, name):
        why = _compressible(ds)
        if why is not None:
            ds.file.copy(ds, dparent, name=name)
            print(f"{path}: copied unchanged ({why})")
            return
        dtype = ds.dtype.newbyteorder("=")
        chunks = _chunk_shape(ds.shape, args.chunks or ds.chunks)
        out = dparent.create_dataset(name, shape=ds.shape, dtype=dtype, chunks=chunks,
                                     maxshape=ds.maxshape, **opts)
        _copy_attrs(ds, out)
        _write(ds, out, chunks, path)
        done.append(path)

    with h5py.File(args.input, "r") as fin, h5py.File(args.output, "w") as fout:
        _copy_tree(fin, fout, on_dataset, "compress")
    # Measure on a fresh handle, so that values really come back through the filter.
    raw_total = stored_total = 0
    bad = []
    with h5py.File(args.input, "r") as fin, h5py.File(args.output, "r") as fout:
        for path in done:
            src, out = fin[path], fout[path]
            max_err, worst = _check(src, out, opts.mode, opts.bound)
            raw = src.size * src.dtype.itemsize
            stored = out.id.get_storage_size()
            raw_total += raw
            stored_total += stored
            ratio = raw / stored if stored else float("inf")
            print(f"{path}: {src.shape} {out.dtype.name} chunks {out.chunks}  ratio "
                  f"{ratio:.2f}:1 ({raw} -> {stored} bytes)  max error {max_err:.4g} = "
                  f"{worst:.4f} x bound ({opts.mode}={opts.bound:g})")
            if worst > 1.0:
                bad.append(path)
    if stored_total:
        print(f"total: {raw_total} -> {stored_total} bytes in {len(done)} compressed datasets, "
              f"ratio {raw_total / stored_total:.2f}:1")
    if bad:
        print(f"error: the error bound was exceeded in {', '.join(bad)}", file=sys.stderr)
        return 2
    return 0


def cmd_decompress(args):
    h5py = _h5()

    def on_dataset(path, ds, dparent, name):
        if _neural_filter_cd(ds) is None:
            ds.file.copy(ds, dparent, name=name)
            return
        out = dparent.create_dataset(name, shape=ds.shape, dtype=ds.dtype, chunks=ds.chunks,
                                     maxshape=ds.maxshape)
        _copy_attrs(ds, out)
        bar = _tqdm(ds.size * ds.dtype.itemsize, path)
        for sl in _chunk_slices(ds.shape, ds.chunks):
            a = ds[sl]
            out[sl] = a
            if bar is not None:
                bar.update(a.nbytes)
        if bar is not None:
            bar.close()
        print(f"{path}: {ds.shape} {ds.dtype.name} decompressed")

    with h5py.File(args.input, "r") as fin, h5py.File(args.output, "w") as fout:
        _copy_tree(fin, fout, on_dataset, "decompress")
    return 0


def _first_chunk_info(ds):
    try:
        import pyneuralfilter as nf
        if ds.id.get_num_chunks() == 0:
            return None
        info = ds.id.get_chunk_info(0)
        mask, data = ds.id.read_direct_chunk(info.chunk_offset)
        if mask & 1:  # the filter was skipped for this chunk (optional filter failed)
            return {"stored": "raw (filter skipped)"}
        return nf.chunk_info(data)
    except Exception as e:  # noqa: BLE001 - info must not die on one odd dataset
        return {"error": f"{type(e).__name__}: {e}"}


def cmd_info(args):
    h5py = _h5()
    with h5py.File(args.file, "r") as f:
        n = 0
        for path, obj, _link in _walk(f):
            if not isinstance(obj, h5py.Dataset):
                continue
            n += 1
            raw = obj.size * obj.dtype.itemsize
            stored = obj.id.get_storage_size()
            ratio = f"{raw / stored:.2f}:1" if stored else "n/a"
            cd = _neural_filter_cd(obj)
            if cd is None:
                names = ", ".join(f"{nm or fid}" for fid, _, nm in _filters(obj)) or "none"
                print(f"{path}: {obj.shape} {obj.dtype}  filters: {names}  ratio {ratio}")
                continue
            p = parse_cd_values(cd)
            ci = _first_chunk_info(obj)
            model = p.model or "default"
            if ci and ci.get("model"):
                model = f"{ci['model']}" + ("" if p.model else " (default)")
            print(f"{path}: {obj.shape} {obj.dtype}  filter neuralfilter ({NEURAL_FILTER})  "
                  f"{p.mode}={p.bound:g}  model {model}  chunks {obj.chunks}  ratio {ratio}"
                  + (f"  [first chunk: {ci['error']}]" if ci and "error" in ci else ""))
        if n == 0:
            print("no datasets")
    return 0


def h5dump_values(path, dataset, start, count, env=None):
    """Values h5dump prints for a hyperslab (list of floats); raises RuntimeError on failure."""
    exe = shutil.which("h5dump")
    if exe is None:
        raise FileNotFoundError("h5dump")
    cmd = [exe, "-m", "%.17g", "-d", dataset, "-s", ",".join(map(str, start)),
           "-c", ",".join(map(str, count)), "--enable-error-stack", path]
    e = dict(os.environ if env is None else env)
    e["HDF5_PLUGIN_PATH"] = PLUGIN_PATH
    r = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=300)
    body = r.stdout.split("DATA {", 1)
    vals = []
    if len(body) == 2:
        for line in body[1].split("}")[0].splitlines():
            if "):" in line:
                line = line.split("):", 1)[1]
            vals += [float(x) for x in re.findall(r"[-+0-9.eEinfa]+", line)
                     if re.match(r"^[-+]?(\d|inf|nan)", x)]
    n = int(np.prod(count))
    if r.returncode != 0 or len(vals) != n:
        raise RuntimeError(f"h5dump failed (exit {r.returncode}, {len(vals)} of {n} values):\n"
                           f"{r.stderr.strip()[-2000:]}")
    return vals


def cmd_demo(args):
    h5py = _h5()
    from . import datagen
    n = args.size
    out = args.output
    opts = Neural(rel=args.rel)
    print(f"neuralfilter demo: built-in fields at {n}^3, {opts!r}, chunks {args.chunk}^3 -> {out}")
    fields = {name: datagen.field(name, n, seed=1) for name in ("bssn_chi", "kolmo_u")}
    c = min(args.chunk, n)
    with h5py.File(out, "w") as f:
        for name, a in fields.items():
            f.create_dataset(name, data=a, chunks=(c, c, c), **opts)
    ok = True
    with h5py.File(out, "r") as f:
        for name, a in fields.items():
            ds = f[name]
            b = ds[...]
            worst = 0.0
            for sl in _chunk_slices(a.shape, ds.chunks):
                ac = a[sl].astype(np.float64)
                eb = opts.bound * float(ac.max() - ac.min())
                err = float(np.max(np.abs(ac - b[sl])))
                worst = max(worst, err / eb if eb > 0 else (0.0 if err == 0 else np.inf))
            ratio = a.nbytes / ds.id.get_storage_size()
            max_err = float(np.max(np.abs(a.astype(np.float64) - b)))
            print(f"  {name:9s} h5py:   ratio {ratio:6.2f}:1  max error {max_err:.3e}  "
                  f"= {worst:.4f} x bound (rel {opts.bound:g} of each chunk's range)")
            ok &= worst <= 1.0
    if shutil.which("h5dump") is None:
        print("  h5dump: not installed (Debian/Ubuntu: apt-get install hdf5-tools); skipped the "
              "check that HDF5's own tools read the file")
    else:
        env = dict(os.environ, NEURALFILTER_PYTHON=os.environ.get("NEURALFILTER_PYTHON",
                                                                  sys.executable))
        with h5py.File(out, "r") as f:
            for name in fields:
                cnt = (1, 1, min(n, 16))
                start = (n // 2, n // 2, 0)
                mine = f[name][start[0], start[1], :cnt[2]].astype(np.float64)
                try:
                    theirs = np.array(h5dump_values(out, f"/{name}", start, cnt, env))
                except RuntimeError as e:
                    print(f"  {name:9s} h5dump: FAILED: {e}")
                    ok = False
                    continue
                same = np.array_equal(mine, theirs)
                print(f"  {name:9s} h5dump: HDF5_PLUGIN_PATH={PLUGIN_PATH}: {len(theirs)} values "
                      f"{'identical to' if same else 'DIFFERENT from'} h5py's")
                ok &= same
    print("demo " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def cmd_train(argv):
    from .models import train
    return train.main(argv)


def cmd_models(args):
    from . import models
    lst = models.list_models()
    if not lst:
        print("no models found in: " + ", ".join(str(d) for d in models.search_dirs()))
        return 0
    print(f"{'name':10s} {'hash':16s} {'latents':>7s} {'bits':>4s} {'bytes':>8s}  source")
    for m in lst:
        print(f"{m['name'] or '-':10s} {m['hash'][:16]:16s} {m['latent_dim']:7d} "
              f"{m['latent_bits']:4d} {m['bytes']:8d}  {m['source']}")
    return 0


# --------------------------------------------------------------------------------------------
def build_parser():
    p = argparse.ArgumentParser(prog="neuralfilter",
                                description="Error-bounded neural compression of HDF5 datasets")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="compress all float datasets of IN into OUT (like "
                                        "h5repack); other objects are copied")
    c.add_argument("input", metavar="IN")
    c.add_argument("output", metavar="OUT")
    b = c.add_mutually_exclusive_group()
    b.add_argument("--abs", type=float, help="absolute error bound on every value")
    b.add_argument("--rel", type=float, help="error bound relative to each chunk's value range "
                                             "(default 1e-3)")
    c.add_argument("--model", help="model hash (>= 8 hex digits) or name; default model if absent")
    c.add_argument("--chunks", type=_parse_chunks, help="chunk shape, e.g. 32,32,32 (default: "
                   "the input's chunks, else up to 64 per dimension)")
    c.set_defaults(func=cmd_compress)

    d = sub.add_parser("decompress", help="write OUT with every neuralfilter dataset of IN stored "
                                          "uncompressed")
    d.add_argument("input", metavar="IN")
    d.add_argument("output", metavar="OUT")
    d.set_defaults(func=cmd_decompress)

    i = sub.add_parser("info", help="filter, model and bound of each dataset")
    i.add_argument("file", metavar="FILE")
    i.set_defaults(func=cmd_info)

    m = sub.add_parser("demo", help="end-to-end demo on built-in data (h5py and h5dump)")
    m.add_argument("--output", "-o", default="neuralfilter_demo.h5")
    m.add_argument("--size", type=int, default=64)
    m.add_argument("--chunk", type=int, default=32)
    m.add_argument("--rel", type=float, default=1e-3)
    m.set_defaults(func=cmd_demo)

    sub.add_parser("train", help="train a model (pyneuralfilter.models.train)", add_help=False)
    ml = sub.add_parser("models", help="list the models found")
    ml.set_defaults(func=cmd_models)
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        return cmd_train(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, TypeError) as e:
        print(f"neuralfilter {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
