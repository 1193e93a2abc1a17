"""Tests of pyneuralfilter.models: training CLI, integer decoder determinism, store, file format."""
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyneuralfilter import models
from pyneuralfilter.errors import CorruptChunkError, ModelNotFoundError, NeuralFilterError
from pyneuralfilter.models import format as fmt, intdecoder, minifloat, nets, store, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    """No user-level models, no env path, an empty cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NEURALFILTER_MODEL_PATH", raising=False)
    models.clear_cache()
    yield
    models.clear_cache()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model made by the CLI (2 epochs) -> (path of the .nfm, training log)."""
    out = tmp_path_factory.mktemp("train")
    argv = ["builtin:bssn_chi:20:0", "builtin:kolmo_u:20:0", "--epochs", "1", "--hidden", "32,16",
            "--latent-dim", "8", "--out", str(out), "--quiet", "--threads", "1",
            "--eval", "builtin:bssn_chi:20:1"]
    assert train.main(argv) == 0
    assert train.main(argv + ["--epochs", "2", "--resume"]) == 0     # continue to epoch 2
    files = sorted(out.glob("*.nfm"))
    return files[-1] if len(files) == 1 else max(files, key=os.path.getmtime)


@pytest.fixture()
def model(trained):
    return models.Model.from_bytes(trained.read_bytes(), str(trained))


def reference_decode(model, q):
    """The integer decoder re-done with exact int64 arithmetic and bit shifts."""
    a = q.astype(np.int64)
    for i, (wt, b, _, ly) in enumerate(model.decoder.layers):
        sh = model._arrays[f"s{i}"].astype(np.int64)
        if ly["kind"] == "conv3d":
            sh = np.repeat(sh, 125)
        acc = a @ wt.astype(np.int64) + b.astype(np.int64)
        if "act_max" in ly:
            up = np.where(sh > 0, (acc + (np.int64(1) << np.maximum(sh - 1, 0))) >> np.maximum(sh, 0),
                          acc << np.maximum(-sh, 0))
            a = np.clip(up, 0, ly["act_max"])
        else:
            return np.clip(np.ldexp(acc.astype(np.float64), -sh), -1, 1).reshape(-1, 5, 5, 5)


def random_latents(model, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-model.levels, model.levels + 1, (n, model.latent_dim)).astype(np.int16)


# ---- training CLI end to end ---------------------------------------------------------------

def test_cli_training_exports_a_loadable_model(trained, monkeypatch):
    monkeypatch.setenv("NEURALFILTER_MODEL_PATH", str(trained.parent))
    h = trained.name[:16]
    m = models.load(h[:8])
    assert m.hash.startswith(h) and Path(m.source) == trained
    card = m.card
    assert card["command"].startswith("python -m pyneuralfilter.models.train builtin:bssn_chi")
    assert card["training"]["epochs"] == 2                      # resumed run continued to 2
    assert set(card["metrics"]) == {"test_split", "eval"}
    assert card["metrics"]["eval"]["psnr_int_vs_float"] > 30
    from pyneuralfilter import datagen
    from pyneuralfilter.models import data
    x = data.normalize(data.to_blocks(datagen.field("bssn_chi", 10, 1).astype(np.float64)))[0]
    q = m.encode(x)
    assert q.dtype == np.int16 and q.shape == (len(x), 8) and np.abs(q).max() <= m.levels
    y = m.decode(q)
    assert y.dtype == np.float64 and y.shape == x.shape
    assert np.abs(y).max() <= 1.0
    assert m.latent_bytes_per_block == 8


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train.main(["builtin:bssn_chi:10:0", "--out", str(tmp_path), "--resume", "--quiet"])


# ---- integer decoder determinism -----------------------------------------------------------

def test_int_decoder_matches_exact_integer_reference(model):
    q = random_latents(model)
    assert np.array_equal(model.decode(q), reference_decode(model, q))


def test_int_decoder_identical_across_runs_backends_and_threads(model):
    q = random_latents(model, 5000, seed=1)
    ref = model.decode(q).tobytes()
    assert model.decode(q).tobytes() == ref
    before = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            assert model.decode(q, backend="torch").tobytes() == ref
    finally:
        torch.set_num_threads(before)


def test_int_decoder_identical_with_1_and_2_blas_threads(trained):
    code = ("import sys, hashlib, numpy as np; from pyneuralfilter import models;"
            f"m = models.Model.from_bytes(open({str(trained)!r}, 'rb').read());"
            "q = np.random.default_rng(2).integers(-m.levels, m.levels + 1, (20000, m.latent_dim));"
            "print(hashlib.sha256(m.decode(q.astype(np.int16)).tobytes()).hexdigest(),"
            " 'torch' in sys.modules)")
    outs = []
    for t in ("1", "2"):
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t,
                   MKL_NUM_THREADS=t)
        outs.append(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                   text=True, check=True).stdout.split())
    assert outs[0][0] == outs[1][0]
    assert outs[0][1] == "False"                     # decoding never imports torch


def test_decode_rejects_bad_latents(model):
    with pytest.raises(ValueError, match="shape"):
        model.decode(np.zeros((3, model.latent_dim + 1), np.int16))
    with pytest.raises(ValueError, match="lie in"):
        model.decode(np.full((1, model.latent_dim), model.levels + 1, np.int16))
    with pytest.raises(ValueError, match="backend"):
        model.decode(np.zeros((1, model.latent_dim), np.int16), backend="jax")


@pytest.mark.parametrize("wfmt", ["int8", "e4m3", "e5m2"])
def test_conv_and_minifloat_decoders_are_exact_and_close_to_float(wfmt):
    torch.manual_seed(0)
    net = nets.ConvSWAE(latent_dim=6, channels=3).eval()
    q = np.random.default_rng(0).integers(-127, 128, (400, 6)).astype(np.int16)
    spec, arrays = intdecoder.quantize(nets.decoder_layers(net.decoder), q, 127, 12, wfmt)
    m = models.Model.from_bytes(fmt.pack({"architecture": net.arch, "latent_dim": 6,
                                          "latent_bits": 8, "decoder": spec}, arrays))
    y = m.decode(q)
    assert np.array_equal(y, reference_decode(m, q))
    with torch.no_grad():
        f = net.decoder(torch.from_numpy(q.astype(np.float32) / 127)).double().numpy()
    rel = np.sqrt(np.mean((np.clip(f, -1, 1) - y) ** 2)) / max(np.sqrt(np.mean(f ** 2)), 1e-12)
    assert rel < {"int8": 0.02, "e4m3": 0.08, "e5m2": 0.15}[wfmt]


def test_minifloat_grids():
    for f, top, n_finite in (("e4m3", 448.0, 254), ("e5m2", 57344.0, 248)):
        v = minifloat.code_values(f)
        assert np.nanmax(v) == top and np.isfinite(v).sum() == n_finite
        x = np.random.default_rng(0).standard_normal(2000) * 30
        r = minifloat.round_to_grid(x, f)
        finite = v[np.isfinite(v)]
        nearest = finite[np.abs(np.clip(x, -top, top)[:, None] - finite[None]).argmin(1)]
        assert np.array_equal(np.abs(r - x), np.abs(nearest - x))          # round to nearest
        assert np.array_equal(minifloat.round_to_grid(r, f), r)            # idempotent


# ---- model file format -------------------------------------------------------------------

def test_file_name_hash_and_identical_bytes(trained, model):
    assert trained.name == model.hash[:16] + ".nfm"
    assert len(model.hash) == 64 and int(model.hash, 16) >= 0
    assert model.hash == fmt.content_hash(model.card, model._arrays)
    assert model.to_bytes() == trained.read_bytes()


def _rewrite(data, name, change):
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for info in src.infolist():
            b = src.read(info)
            z.writestr(info, change(b) if info.filename == name else b)
    return buf.getvalue()


def test_tampered_model_is_detected(trained):
    data = trained.read_bytes()

    def bump_weight(b):
        a = np.load(io.BytesIO(b))
        a.flat[0] = a.flat[0] + 1 if a.flat[0] < 100 else a.flat[0] - 1
        out = io.BytesIO()
        np.save(out, a)
        return out.getvalue()
    with pytest.raises(CorruptChunkError, match="hash mismatch"):
        models.register_bytes(_rewrite(data, "decoder/w1.npy", bump_weight))

    def bump_arch(b):
        card = json.loads(b)
        card["latent_bits"] = 7
        return json.dumps(card).encode()
    with pytest.raises(fmt.CorruptModelError, match="hash mismatch"):
        models.Model.from_bytes(_rewrite(data, "card.json", bump_arch))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    with pytest.raises(NeuralFilterError):
        models.Model.from_bytes(bytes(flipped))


# ---- store -------------------------------------------------------------------------------

def test_lookup_order_env_then_user_then_memory(trained, tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b, tmp_path / "xdg" / "neuralfilter" / "models"):
        d.mkdir(parents=True)
        (d / trained.name).write_bytes(trained.read_bytes())
    monkeypatch.setenv("NEURALFILTER_MODEL_PATH", os.pathsep.join([str(a), str(b)]))
    h = trained.name[:16]
    assert Path(models.load(h).source).parent == a
    models.clear_cache()
    (a / trained.name).unlink()
    assert Path(models.load(h).source).parent == b
    models.clear_cache()
    monkeypatch.delenv("NEURALFILTER_MODEL_PATH")
    assert Path(models.load(h).source).parent == tmp_path / "xdg" / "neuralfilter" / "models"
    models.clear_cache()
    (tmp_path / "xdg" / "neuralfilter" / "models" / trained.name).unlink()
    full = models.register_bytes(trained.read_bytes())
    assert models.load(h).hash == full and models.load(full).source == "<registered>"
    listed = models.list_models()
    assert any(e["hash"] == full and e["source"] == "<registered>" for e in listed)
    assert models.load(models.load(h)) is models.load(h)                  # Model passes through


def test_missing_model_error_names_hash_and_places(tmp_path, monkeypatch):
    env_dir = tmp_path / "somewhere"
    monkeypatch.setenv("NEURALFILTER_MODEL_PATH", str(env_dir))
    missing = "0123456789abcdef" * 4
    with pytest.raises(ModelNotFoundError) as e:
        models.load(missing[:12])
    msg = str(e.value)
    assert isinstance(e.value, LookupError)
    for part in (missing[:12], str(store.ZOO), str(env_dir), str(store.user_dir()), "register_bytes"):
        assert part in msg
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        models.load("nosuchname")
    with pytest.raises(ModelNotFoundError, match="8 hex"):
        models.load("abc")


def test_shipped_defaults_load_and_decode():
    if not models.DEFAULT_MODELS:
        pytest.skip("no shipped models in models/zoo")
    for name, h in models.DEFAULT_MODELS.items():
        m = models.load(name)
        assert m.hash == h and Path(m.source).parent == store.ZOO
        assert m.decode(np.zeros((2, m.latent_dim), np.int16)).shape == (2, 5, 5, 5)
    assert models.load() is models.load("general")


def test_embed_and_load_embedded_without_store(trained, tmp_path):
    h5py = pytest.importorskip("h5py")
    m = models.Model.from_bytes(trained.read_bytes())
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
        assert models.embed(f, m) == m.hash
    models.clear_cache()
    with pytest.raises(ModelNotFoundError):
        models.load(m.hash)
    assert models.load_embedded(str(path)) == [m.hash]
    q = random_latents(m, 100)
    assert np.array_equal(models.load(m.hash[:10]).decode(q), m.decode(q))


# ---- compression -------------------------------------------------------------------------

def test_compressed_variants_are_valid_models(model):
    from pyneuralfilter.models import compress, data
    from pyneuralfilter import datagen
    x = data.normalize(data.to_blocks(datagen.field("bssn_chi", 15, 0).astype(np.float64)))[0]
    q = random_latents(model, 500)
    with torch.no_grad():                      # the float twin of the integer decoder
        f = compress.float_decoder(model)(torch.from_numpy(q / model.levels).float()).double().numpy()
    assert data.psnr(model.decode(q), np.clip(f, -1, 1)) > 35
    d = compress.float_decoder(model)
    masks = compress.prune_magnitude(d, 0.5)
    compress.fine_tune(model, d, x, epochs=1, masks=masks)
    pruned = compress.derive(model, d, x, "magnitude-50")
    w = pruned._arrays["w1"]
    assert (w == 0).mean() >= 0.45 and pruned.card["derived_from"] == model.hash
    small = compress.derive(model, compress.prune_neurons(compress.float_decoder(model), 0.5), x,
                            "neurons-50", wfmt="e4m3")
    widths = [len(b) for _, b, _, _ in small.decoder.layers]
    full = [len(b) for _, b, _, _ in model.decoder.layers]
    assert widths[:-1] == [round(k / 2) for k in full[:-1]] and widths[-1] == 125
    assert np.array_equal(small.decode(q), reference_decode(small, q))
    # the variants share the encoder, so they decode the same stored latents
    assert np.array_equal(small.encode(x), model.encode(x))


def test_h5_inputs_with_globs_and_transforms(tmp_path):
    h5py = pytest.importorskip("h5py")
    from pyneuralfilter.models import data
    rng = np.random.default_rng(0)
    for i in range(2):
        with h5py.File(tmp_path / f"run{i}.h5", "w") as f:
            f["grp/rho"] = np.exp(rng.standard_normal((10, 11, 12)))
            f["grp/u"] = rng.standard_normal((10, 10, 10))
            f["other"] = np.zeros((10, 10, 10))
    got = data.read_input(str(tmp_path / "run*.h5") + ":/grp/*")
    assert [lbl.split(":")[-1] for lbl, _ in got] == ["/grp/rho", "/grp/u"] * 2
    x, labels = data.load_blocks([str(tmp_path / "run0.h5") + ":/grp/rho"], "pos_log")
    assert x.shape == (2 * 2 * 2, 5, 5, 5) and x.dtype == np.float32
    assert np.allclose(x.min(axis=(1, 2, 3)), -1) and np.allclose(x.max(axis=(1, 2, 3)), 1)
    with pytest.raises(FileNotFoundError, match="no file"):
        data.read_input(str(tmp_path / "nothing*.h5") + ":/x")
    with pytest.raises(ValueError, match="builtin"):
        data.read_input("builtin:bssn_chi")
    tr, va, te = data.split(100, seed=3)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(100))
    assert np.array_equal(tr, data.split(100, seed=3)[0])


def test_decoder_that_could_lose_exactness_is_rejected(model):
    arrays = dict(model._arrays, b0=model._arrays["b0"].copy())
    arrays["b0"][0] = 2 ** 60                    # an accumulator beyond 2**53: not exact in float64
    card = {k: v for k, v in model.card.items() if k != "hash"}
    with pytest.raises(CorruptChunkError, match="exact"):
        models.Model.from_bytes(fmt.pack(card, arrays))


def test_every_flipped_byte_of_a_model_file_is_a_clear_error_or_harmless(trained):
    """Damage anywhere in a model file (zip directory, deflate streams, arrays, card) raises
    NeuralFilterError; it never escapes as a zlib/zip/numpy exception."""
    data = trained.read_bytes()
    for pos in range(0, len(data), max(1, len(data) // 200)):
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        try:
            models.Model.from_bytes(bytes(flipped))
        except NeuralFilterError:
            pass
