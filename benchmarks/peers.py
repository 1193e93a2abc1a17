"""One adapter per compressor for bench_codec.py.

Every adapter has a ``name``, a ``lossless`` flag and
``prepare(data, eb, chunk) -> Prepared(nbytes, t_comp, decode, note, digest)``: compress ``data``
with absolute error bound ``eb`` using chunks of shape ``chunk`` (``data.shape`` for one chunk)
and return the stored size, the best of a few compression timings and ``decode()``, which
decompresses the whole array.  ``timed_together`` times the decoders of one configuration in
rounds (each once per round, in turn), so that the machine's slowdowns hit them alike.

- Direct codecs (neuralfilter, pysz) are called chunk by chunk; the chunks are cut before the clock
  starts, putting the decoded chunks back together is timed.
- HDF5 filters (hdf5plugin) write an in-memory HDF5 file (``io.BytesIO``) with ``chunks=chunk``:
  compression time = create_dataset + close (the chunk cache may hold chunks until close),
  decompression time = ``read_direct`` of a freshly opened file with the chunk cache disabled, size =
  the dataset's storage size (sum of the stored chunks, no file metadata). Chunks the filter skipped
  (optional filter failed and HDF5 stored them raw) are counted and reported.
"""
import hashlib
import io
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

MIN_TIME = 0.3   # repeat a timed step while the total stays below this many seconds...
MAX_REPS = 3     # ...up to this many times; report the fastest
DEC_REPS = 15    # decompression is cheap and its timings vary most between runs: more tries
                 # (7 let 32^3-chunk configurations near parity flip between runs of one code)


@dataclass
class Prepared:
    nbytes: int
    t_comp: float
    decode: Callable[[], np.ndarray]
    note: str = ""
    digest: str = ""  # sha1 of the compressed chunks (direct codecs): spots identical outputs


def timed(fn, max_reps=MAX_REPS):
    """(result of the last call, best time) over 1..max_reps calls of fn()."""
    (out,), (best,) = timed_together([fn], max_reps)
    return out, best


def timed_together(fns, max_reps=DEC_REPS):
    """(result of each fn's last call, each fn's best time), the fns called in rounds, each
    once per round in turn, up to max_reps rounds; a fn leaves the rounds once another call
    would take its total past MIN_TIME.  An exception of a fn is its result (it leaves too)."""
    n = len(fns)
    out, best, total, last = [None] * n, [float("inf")] * n, [0.0] * n, [0.0] * n
    active = list(range(n))
    for _ in range(max_reps):
        for i in active:
            t0 = time.perf_counter()
            try:
                out[i] = fns[i]()
            except Exception as e:  # noqa: BLE001 - the caller records it
                out[i] = e
            last[i] = time.perf_counter() - t0
            best[i], total[i] = min(best[i], last[i]), total[i] + last[i]
        active = [i for i in active
                  if not isinstance(out[i], Exception) and total[i] + last[i] <= MIN_TIME]
        if not active:
            break
    return out, best


def chunk_slices(shape, chunk):
    """Slices of the chunks of an array of `shape` (edge chunks may be smaller)."""
    grids = [range(0, s, c) for s, c in zip(shape, chunk)]
    out = [()]
    for g, c, s in zip(grids, chunk, shape):
        out = [o + (slice(i, min(i + c, s)),) for o in out for i in g]
    return out


class DirectCodec:
    """Compressor called on numpy chunks; subclasses define compress/decompress of one chunk."""
    lossless = False

    def compress(self, arr, eb):
        raise NotImplementedError

    def decompress(self, blob, shape, dtype):
        raise NotImplementedError

    def prepare(self, data, eb, chunk):
        sl = chunk_slices(data.shape, chunk)
        pieces = [np.ascontiguousarray(data[s]) for s in sl]
        blobs, t_comp = timed(lambda: [self.compress(p, eb) for p in pieces])

        def decode():
            out = np.empty_like(data)
            for s, b, p in zip(sl, blobs, pieces):
                out[s] = self.decompress(b, p.shape, p.dtype)
            return out
        h = hashlib.sha1()
        for b in blobs:
            h.update(memoryview(b).cast("B"))
        return Prepared(sum(len(memoryview(b).cast("B")) for b in blobs), t_comp, decode,
                        digest=h.hexdigest())


class NeuralFilter(DirectCodec):
    """pyneuralfilter.encode/decode, abs bound, one call per chunk."""

    def __init__(self, name, **opts):
        self.name, self.opts = name, opts

    def compress(self, arr, eb):
        import pyneuralfilter
        return pyneuralfilter.encode(arr, abs=eb, **self.opts)

    def decompress(self, blob, shape, dtype):
        import pyneuralfilter
        out = pyneuralfilter.decode(blob)
        if out.shape != tuple(shape) or out.dtype != dtype:
            raise ValueError(f"decoded {out.dtype}{out.shape}, expected {np.dtype(dtype)}{tuple(shape)}")
        return out


class PySZ(DirectCodec):
    """SZ3 through its own Python binding (pysz), ABS mode, default algorithm."""
    name = "SZ3 (pysz)"

    def compress(self, arr, eb):
        import pysz
        cfg = pysz.szConfig(arr.shape)
        cfg.errorBoundMode = pysz.szErrorBoundMode.ABS
        cfg.absErrorBound = float(eb)
        comp, _ = pysz.sz.compress(arr, cfg)
        return comp

    def decompress(self, blob, shape, dtype):
        import pysz
        out, _ = pysz.sz.decompress(blob, dtype, tuple(shape))
        return out


class HDF5Filter:
    """An hdf5plugin filter applied through h5py to an in-memory file."""

    def __init__(self, name, make_kwargs, lossless=False):
        self.name, self.make_kwargs, self.lossless = name, make_kwargs, lossless

    def prepare(self, data, eb, chunk):
        import h5py
        kw = self.make_kwargs(eb)
        bio = io.BytesIO()

        def write():
            bio.seek(0)
            bio.truncate()
            with h5py.File(bio, "w") as f:
                f.create_dataset("x", data=data, chunks=tuple(chunk), **kw)
        _, t_comp = timed(write)

        def read():
            with h5py.File(bio, "r", rdcc_nbytes=0) as f:
                out = np.empty(data.shape, data.dtype)
                f["x"].read_direct(out)
                return out
        with h5py.File(bio, "r") as f:
            ds = f["x"]
            nbytes = ds.id.get_storage_size()
            nchunks = ds.id.get_num_chunks()
            skipped = sum(ds.id.get_chunk_info(i).filter_mask != 0 for i in range(nchunks))
        note = f"filter skipped on {skipped}/{nchunks} chunks (stored raw)" if skipped else ""
        return Prepared(nbytes, t_comp, read, note)


def _sz3(eb):
    import hdf5plugin
    return dict(compression=hdf5plugin.SZ3(absolute=float(eb)))


def _zfp(eb):
    import hdf5plugin
    return dict(compression=hdf5plugin.Zfp(accuracy=float(eb)))


def _sperr(eb):
    import hdf5plugin
    return dict(compression=hdf5plugin.Sperr(absolute=float(eb)))


def _zstd(eb):
    import hdf5plugin
    return dict(compression=hdf5plugin.Zstd(clevel=3), shuffle=True)


def _neural(eb):
    import pyneuralfilter
    return dict(pyneuralfilter.Neural(abs=float(eb)))


NEURAL = [
    NeuralFilter("neuralfilter"),
    NeuralFilter("nf predictor=interp", predictor="interp"),
    NeuralFilter("nf context_model=False", context_model=False),
    NeuralFilter("nf predictor=swae", predictor="swae"),
]
# our codec as the others' filters are measured: through h5py and the C plugin, every chunking
NEURAL_HDF5 = HDF5Filter("nf HDF5 filter", _neural)
SZ3_FILTER = "SZ3 (hdf5plugin)"
SZ3_BUILDS = (SZ3_FILTER, PySZ.name)


def peers():
    """The peer compressors present in this environment (SPERR only if hdf5plugin has it)."""
    import hdf5plugin
    out = [HDF5Filter(SZ3_FILTER, _sz3), PySZ(), HDF5Filter("ZFP accuracy (hdf5plugin)", _zfp)]
    if hasattr(hdf5plugin, "Sperr") and any(f.__name__ == "Sperr" for f in hdf5plugin.get_filters()):
        out.append(HDF5Filter("SPERR pwe (hdf5plugin)", _sperr))
    out.append(HDF5Filter("zstd+shuffle (lossless)", _zstd, lossless=True))
    return out


def neural_filter_status():
    """(True, '') when our HDF5 filter is registered with h5py (the plugin is built), else
    (False, reason): then only the codec itself is measured."""
    try:
        import pyneuralfilter.filter
        pyneuralfilter.filter.register(strict=True)
    except Exception as e:  # noqa: BLE001 - report whatever stops it
        return False, f"{type(e).__name__}: {e}"
    return True, ""


def neural_status():
    """(True, '') when pyneuralfilter.encode/decode are importable, else (False, reason)."""
    try:
        import pyneuralfilter
        pyneuralfilter.encode, pyneuralfilter.decode  # noqa: B018
    except Exception as e:  # noqa: BLE001 - report whatever stops the import
        return False, f"{type(e).__name__}: {e}"
    return True, ""
