"""The CUDA path (skipped without a GPU): the SWAE encoder on the GPU, the integer decoder there."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

import pyneuralfilter as nf  # noqa: E402
from pyneuralfilter import datagen, swae  # noqa: E402
from pyneuralfilter.codec import LATENTS  # noqa: E402
from pyneuralfilter.models import model as model_module  # noqa: E402
from common import absolute_bound, assert_within_bound  # noqa: E402


@pytest.fixture(scope="module")
def default_model():
    return swae.model_for(None)


def _blocks(field, n=40, seed=1):
    """The normalised 5^3 blocks of a field, as the codec hands them to the encoder."""
    a = datagen.field(field, n, seed=seed).astype(np.float32)
    return swae.normalise(swae.blocks_of(a, swae.block_grid(a.shape)))[2]


def test_gpu_is_the_default_encoder_device(default_model, monkeypatch):
    monkeypatch.delenv("NEURALFILTER_DEVICE", raising=False)
    assert model_module.default_device() == "cuda"
    default_model.encode(_blocks("bssn_chi", 10))
    assert next(default_model._load_encoder("cuda").parameters()).is_cuda
    monkeypatch.setenv("NEURALFILTER_DEVICE", "cpu")
    assert model_module.default_device() == "cpu"


@pytest.mark.parametrize("field", ["bssn_chi", "kolmo_u", "lognormal_rho"])
def test_gpu_latents_agree_with_the_cpu(default_model, field):
    """Stored latents decide the decode, so a disagreement costs bytes, never correctness; with
    TF32 off a float32 GPU encoder rounds to the same latent almost always."""
    x = _blocks(field)
    zg, zc = default_model.encode(x, device="cuda"), default_model.encode(x, device="cpu")
    assert np.abs(zg.astype(int) - zc).max() <= 1
    assert np.mean(zg == zc) >= 0.999


def test_integer_decoder_on_the_gpu_is_bit_identical(default_model):
    q = np.random.default_rng(3).integers(-default_model.levels, default_model.levels + 1,
                                          (50000, default_model.latent_dim)).astype(np.int16)
    ref = default_model.decode(q).tobytes()
    assert default_model.decode(q, backend="torch", device="cuda").tobytes() == ref


@pytest.mark.parametrize("predictor", ["swae", "auto"])
def test_gpu_encoded_chunks_decode_within_bound_and_identically_without_gpu(tmp_path, predictor):
    a = datagen.field("bssn_chi", 30, seed=1)
    data = nf.encode(a, rel=1e-3, predictor=predictor)
    if predictor == "swae":
        assert LATENTS in nf.chunk_info(data)["sections"]       # the encoder did run
    out = nf.decode(data)
    assert_within_bound(a, out, absolute_bound(a, rel=1e-3))
    path = tmp_path / "chunk.nfc"
    path.write_bytes(data)
    code = ("import sys, hashlib; sys.modules['torch'] = None; import pyneuralfilter as nf; "
            "print(hashlib.sha256(nf.decode(open(sys.argv[1], 'rb').read()).tobytes()).hexdigest())")
    cpu_only = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                              check=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert cpu_only.stdout.strip() == hashlib.sha256(out.tobytes()).hexdigest()
