"""The HDF5 filter through h5py: round trips with the bound checked on every value, chunk sizes,
error messages on the HDF5 error stack, options class, threads, plugin-path loading.

Uses the INSTALLED package (``pip install .``); the plugin is found via pyneuralfilter.PLUGIN_PATH.
"""
import os
import shutil
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
import pyneuralfilter as nf  # noqa: E402
from pyneuralfilter.filter import (NEURAL_FILTER, Neural, PLUGIN_PATH, pack_cd_values,  # noqa
                                   parse_cd_values)


def smooth(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 3, s) for s in shape], indexing="ij")
    a = sum(np.sin((i + 1.3) * g) for i, g in enumerate(grids))
    return (a + 0.01 * rng.standard_normal(shape)).astype(dtype)


def chunk_slices(shape, chunks):
    import itertools
    for start in itertools.product(*[range(0, s, c) for s, c in zip(shape, chunks)]):
        yield tuple(slice(o, min(o + c, s)) for o, c, s in zip(start, chunks, shape))


def test_plugin_installed():
    so = os.path.join(nf.PLUGIN_PATH, "libh5neuralfilter.so")
    assert os.path.isfile(so), f"plugin missing at {so}"
    assert nf.PLUGIN_PATH == PLUGIN_PATH and nf.NEURAL_FILTER == NEURAL_FILTER
    assert h5py.h5z.filter_avail(NEURAL_FILTER)


def test_plugin_links_no_hdf5_or_python():
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("ldd missing")
    so = os.path.join(nf.PLUGIN_PATH, "libh5neuralfilter.so")
    out = subprocess.run([ldd, so], capture_output=True, text=True).stdout
    assert "hdf5" not in out and "python" not in out, out


CASES = [  # shape, chunks (several not multiples of 5, edge chunks)
    ((40, 40, 40), (20, 20, 20)),
    ((33, 29, 47), (16, 13, 24)),
    ((25, 25, 25), (5, 5, 5)),
    ((1000,), (333,)),
    ((37, 61), (16, 32)),
    ((6, 12, 10, 14), (3, 7, 5, 7)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,chunks", CASES)
def test_roundtrip_abs(tmp_path, dtype, shape, chunks):
    a = smooth(shape, dtype)
    eb = 1e-3
    p = tmp_path / "a.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=a, chunks=chunks, **Neural(abs=eb))
    with h5py.File(p, "r") as f:
        b = f["x"][...]
        assert b.dtype == a.dtype and b.shape == a.shape
        err = np.abs(a.astype(np.float64) - b.astype(np.float64))
        assert err.max() <= eb, f"bound violated: {err.max()} > {eb}"
        assert err.max() > 0  # lossy: it really went through the codec


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roundtrip_rel_every_chunk(tmp_path, dtype):
    shape, chunks, rel = (48, 32, 40), (16, 16, 20), 1e-3
    a = smooth(shape, dtype, seed=3) * 100 + 7
    p = tmp_path / "r.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=a, chunks=chunks, **Neural(rel=rel))
    with h5py.File(p, "r") as f:
        b = f["x"][...]
    for sl in chunk_slices(shape, chunks):  # rel is relative to each chunk's range
        ac, bc = a[sl].astype(np.float64), b[sl].astype(np.float64)
        assert np.abs(ac - bc).max() <= rel * (ac.max() - ac.min())


def test_default_options_are_rel_1e3(tmp_path):
    a = smooth((32, 32, 32), np.float32)
    p = tmp_path / "d.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=a, chunks=(16, 16, 16), compression=NEURAL_FILTER)
    with h5py.File(p, "r") as f:
        fid, _flags, cd, _name = f["x"].id.get_create_plist().get_filter(0)
        assert fid == NEURAL_FILTER
        cdv = parse_cd_values(cd)
        assert (cdv.mode, cdv.bound, cdv.model, cdv.itemsize, cdv.shape) == \
            ("rel", 1e-3, None, 4, (16, 16, 16))
        b = f["x"][...]
    for sl in chunk_slices(a.shape, (16, 16, 16)):
        assert np.abs(a[sl] - b[sl]).max() <= 1e-3 * (a[sl].max() - a[sl].min())


def test_compression_equals_options_object(tmp_path):
    a = smooth((20, 20, 20), np.float64)
    with h5py.File(tmp_path / "o.h5", "w") as f:
        d = f.create_dataset("x", data=a, chunks=(10, 10, 10), compression=Neural(abs=1e-4))
        assert parse_cd_values(d.id.get_create_plist().get_filter(0)[2]).bound == 1e-4
        assert np.abs(d[...] - a).max() <= 1e-4


def test_chunks_shrink(tmp_path):
    a = smooth((64, 64, 64), np.float32)
    p = tmp_path / "s.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=a, chunks=(32, 32, 32), **Neural(rel=1e-3))
    with h5py.File(p, "r") as f:
        ds = f["x"]
        raw = 32 ** 3 * 4
        sizes = []
        for i in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(i)
            mask, data = ds.id.read_direct_chunk(info.chunk_offset)
            assert mask == 0, "the filter was skipped for a chunk"
            info_d = nf.chunk_info(data)
            assert tuple(info_d["shape"]) == (32, 32, 32)
            sizes.append(len(data))
        assert max(sizes) < raw / 2, f"chunks did not shrink enough: {sizes} vs {raw}"
        assert ds.id.get_storage_size() < a.nbytes / 2


# HDF5 2.0 (h5py's) drops errors that a filter callback pushes on the error stack (it saves and
# restores the stack around user callbacks), so through h5py the reason is on stderr and the
# OSError says "filter returned failure during read"; HDF5 1.10 hosts (h5dump, C programs) show
# it on the error stack too (test_filter_tools.py).
def test_corrupt_chunk_error_message(tmp_path, capfd):
    a = smooth((32, 32, 32), np.float32)
    p = tmp_path / "c.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=a, chunks=(16, 16, 16), **Neural(abs=1e-3))
    with h5py.File(p, "r+") as f:
        ds = f["x"]
        _, data = ds.id.read_direct_chunk((16, 0, 0))
        bad = bytearray(data)
        for i in range(len(bad) // 2, len(bad) // 2 + 8):
            bad[i] ^= 0x5A
        ds.id.write_direct_chunk((16, 0, 0), bytes(bad))
    with h5py.File(p, "r") as f:
        ds = f["x"]
        assert np.abs(ds[:16] - a[:16]).max() <= 1e-3  # other chunks still read
        capfd.readouterr()
        with pytest.raises(OSError) as e:
            ds[16:32, :16, :16]
    assert "filter returned failure during read" in str(e.value) or "neuralfilter" in str(e.value)
    err = capfd.readouterr().err
    assert "neuralfilter: decompressing a chunk failed: CorruptChunkError" in err, err


def test_garbage_chunk_error_message(tmp_path, capfd):
    p = tmp_path / "g.h5"
    with h5py.File(p, "w") as f:
        ds = f.create_dataset("x", shape=(8, 8), dtype="f4", chunks=(8, 8), **Neural(abs=1e-3))
        ds.id.write_direct_chunk((0, 0), b"this is not a neuralfilter chunk")
    capfd.readouterr()
    with h5py.File(p, "r") as f, pytest.raises(OSError):
        f["x"][...]
    err = capfd.readouterr().err
    assert "neuralfilter: decompressing a chunk failed: CorruptChunkError" in err, err


def test_chunk_of_another_shape_error_message(tmp_path, capfd):
    p = tmp_path / "m.h5"
    with h5py.File(p, "w") as f:
        ds = f.create_dataset("x", shape=(8, 8), dtype="f4", chunks=(8, 8), **Neural(abs=1e-3))
        ds.id.write_direct_chunk((0, 0), nf.encode(np.ones((4, 16), np.float32), abs=1e-3))
    capfd.readouterr()
    with h5py.File(p, "r") as f, pytest.raises(OSError):
        f["x"][...]
    err = capfd.readouterr().err
    assert "CorruptChunkError: chunk does not fit the dataset's chunks of shape (8, 8)" in err, err


def test_datasets_with_other_chunks_read_in_turn(tmp_path):
    """The plugin decodes into one reused array per thread: reading datasets of other chunk
    shapes and dtypes in turn gives each chunk's own values."""
    p = tmp_path / "turns.h5"
    arrays = {"a": (smooth((32, 32, 32), np.float32), (16, 16, 16)),
              "b": (smooth((20, 20, 20), np.float64, seed=1), (7, 9, 11)),
              "c": (smooth((50, 40), np.float32, seed=2), (50, 40))}
    with h5py.File(p, "w") as f:
        for k, (a, chunks) in arrays.items():
            f.create_dataset(k, data=a, chunks=chunks, **Neural(abs=1e-3))
    with h5py.File(p, "r") as f:
        reads = {k: list(chunk_slices(a.shape, chunks)) for k, (a, chunks) in arrays.items()}
        for turn in range(max(map(len, reads.values()))):
            for k, slices in reads.items():
                sl = slices[turn % len(slices)]
                ds = f[k]
                _, data = ds.id.read_direct_chunk(tuple(s.start for s in sl))
                expected = nf.decode(data)[tuple(slice(0, s.stop - s.start) for s in sl)]
                assert ds[sl].tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", ["i4", "u2", "f2", ">f4"])
def test_unsupported_dtype_refused(tmp_path, dtype):
    with h5py.File(tmp_path / "i.h5", "w") as f, pytest.raises(Exception) as e:
        f.create_dataset("x", data=np.arange(100).astype(dtype), chunks=(10,), **Neural(abs=1))
    msg = str(e.value)
    assert "neuralfilter: unsupported datatype" in msg, msg
    if dtype in ("i4", "u2"):
        assert "integer" in msg and "float32 and float64" in msg, msg
    if dtype == "f2":
        assert "2 bytes" in msg, msg
    if dtype == ">f4":
        assert "byte order" in msg, msg


def test_rank_5_refused(tmp_path):
    with h5py.File(tmp_path / "r5.h5", "w") as f, pytest.raises(Exception) as e:
        f.create_dataset("x", shape=(2,) * 5, dtype="f4", chunks=(2,) * 5, **Neural(abs=1))
    assert "unsupported chunk rank 5" in str(e.value)


def test_bad_cd_values_refused(tmp_path):
    with h5py.File(tmp_path / "b.h5", "w") as f:
        with pytest.raises(Exception) as e:
            f.create_dataset("x", shape=(8,), dtype="f4", chunks=(8,),
                             compression=NEURAL_FILTER, compression_opts=(1, 7, 0, 0, 0, 0))
        assert "not an error-bound mode" in str(e.value)
        with pytest.raises(Exception) as e:
            f.create_dataset("y", shape=(8,), dtype="f4", chunks=(8,),
                             compression=NEURAL_FILTER, compression_opts=(1, 1, 0, 0, 0, 0))
        assert "positive finite" in str(e.value)
        with pytest.raises(Exception) as e:
            f.create_dataset("z", shape=(8,), dtype="f4", chunks=(8,),
                             compression=NEURAL_FILTER, compression_opts=(2, 1, 0, 0, 0, 0))
        assert "layout version 2" in str(e.value)


def test_options_class_errors():
    with pytest.raises(TypeError, match="exactly one"):
        Neural()
    with pytest.raises(TypeError, match="not both"):
        Neural(abs=1e-3, rel=1e-3)
    for bad in (0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive finite"):
            Neural(abs=bad)
        with pytest.raises(ValueError, match="positive finite"):
            Neural(rel=bad)
    with pytest.raises(TypeError):
        Neural(abs="x")
    with pytest.raises(ValueError, match="at least 8 hex"):
        Neural(abs=1, model="abc")
    with pytest.raises(TypeError):
        Neural(abs=1, model=3)


def test_options_mapping_and_cd_layout():
    n = Neural(rel=1e-4, model="0123456789abcdef" + "0" * 48)
    assert dict(n) == {"compression": NEURAL_FILTER, "compression_opts": n.filter_options}
    cd = n.filter_options
    assert cd[:2] == (1, 2)
    bits = struct.unpack("<Q", struct.pack("<d", 1e-4))[0]
    assert cd[2] == bits & 0xFFFFFFFF and cd[3] == bits >> 32  # low word first
    assert cd[4:] == (0x01234567, 0x89ABCDEF)
    assert parse_cd_values(cd + (8, 3, 5, 6, 7)) == (1, "rel", 1e-4, "0123456789abcdef", 8,
                                                     (5, 6, 7))
    assert pack_cd_values(abs=0.5)[4:] == (0, 0)


def test_threads_read_one_file(tmp_path):
    p = tmp_path / "t.h5"
    data = {f"x{i}": smooth((32, 32, 32), np.float32, seed=i) for i in range(4)}
    with h5py.File(p, "w") as f:
        for k, a in data.items():
            f.create_dataset(k, data=a, chunks=(16, 16, 16), **Neural(abs=1e-3))
    errors, results = [], {}
    with h5py.File(p, "r") as f:
        def work(k, rep):
            try:
                for _ in range(rep):
                    results[k] = f[k][...]
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        threads = [threading.Thread(target=work, args=(k, 2)) for k in data]
        threads += [threading.Thread(target=work, args=("x0", 2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a reader thread hangs"
    assert not errors, errors
    for k, a in data.items():
        assert np.abs(results[k] - a).max() <= 1e-3


def test_plugin_path_without_registration(tmp_path):
    """A Python process that never imports pyneuralfilter: h5py's HDF5 loads the plugin from
    HDF5_PLUGIN_PATH (the plugin then finds h5py's HDF5 by scanning loaded libraries)."""
    p = tmp_path / "pp.h5"
    a = smooth((20, 30, 40), np.float32)
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=a, chunks=(10, 15, 20), **Neural(abs=1e-3))
    code = (
        "import sys, h5py, numpy as np\n"
        "f = h5py.File(sys.argv[1], 'r+')\n"
        "b = f['x'][...]\n"
        "f.create_dataset('y', data=b, chunks=(10, 15, 20), compression=%d,"
        " compression_opts=(1, 1, 0, 1062232653, 0, 0))\n"  # abs = 1e-3 (hi word, lo word 0)
        "np.save(sys.argv[2], b)\n" % NEURAL_FILTER)
    env = dict(os.environ, HDF5_PLUGIN_PATH=PLUGIN_PATH)
    r = subprocess.run([sys.executable, "-c", code, str(p), str(tmp_path / "b.npy")],
                       env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    b = np.load(tmp_path / "b.npy")
    assert np.abs(a - b).max() <= 1e-3
    with h5py.File(p, "r") as f:
        bound = parse_cd_values(f["y"].id.get_create_plist().get_filter(0)[2]).bound
        assert f["y"].id.get_storage_size() < b.nbytes
        assert np.abs(f["y"][...] - b).max() <= bound


def test_decode_chunk_into_the_plugins_buffer():
    """The plugin passes a writable memoryview over the buffer it returns to HDF5: the chunk is
    decoded into it, and the callback returns an array over exactly that memory."""
    from pyneuralfilter.filter import decode_chunk
    a = smooth((12, 10, 7), np.float64)
    cd = pack_cd_values(abs=1e-3) + (8, 3, 12, 10, 7)
    target = bytearray(a.nbytes)
    got = decode_chunk(nf.encode(a, abs=1e-3), cd, memoryview(target))
    assert np.shares_memory(got, np.frombuffer(target, np.uint8))
    assert np.array_equal(np.frombuffer(target, "=f8").reshape(a.shape), nf.decode(nf.encode(a, abs=1e-3)))
    del got
    with pytest.raises(nf.CorruptChunkError, match="does not fit"):
        decode_chunk(nf.encode(a[:6], abs=1e-3), cd, memoryview(target))


def test_repeated_failed_reads_then_good_ones(tmp_path, capfd):
    """After a failed decode the plugin frees its buffer only once Python's memoryview over it
    is released (else it never frees it): many failed reads neither crash nor disturb the
    chunks read after them."""
    a = smooth((16, 16, 32), np.float32)
    p = tmp_path / "f.h5"
    with h5py.File(p, "w") as f:
        ds = f.create_dataset("x", data=a, chunks=(16, 16, 16), **Neural(abs=1e-3))
        _, data = ds.id.read_direct_chunk((0, 0, 16))
        bad = bytearray(data)
        bad[len(bad) // 2] ^= 0xFF
        ds.id.write_direct_chunk((0, 0, 16), bytes(bad))
    with h5py.File(p, "r") as f:
        for _ in range(50):
            with pytest.raises(OSError):
                f["x"][...]
        assert np.abs(f["x"][:, :, :16] - a[:, :, :16]).max() <= 1e-3
    capfd.readouterr()
