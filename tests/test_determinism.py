"""Decoding is bit-identical whatever the thread count or backend."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import pyneuralfilter as nf
from pyneuralfilter import datagen

DECODE = ("import sys, hashlib, pyneuralfilter as nf; "
          "print(hashlib.sha256(nf.decode(open(sys.argv[1], 'rb').read()).tobytes()).hexdigest())")


def _decode_in_subprocess(path, threads, hide_torch=False):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    code = DECODE
    if hide_torch:       # decoding must not need torch
        code = "import sys; sys.modules['torch'] = None; " + code
    out = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True,
                         text=True, check=True, cwd=path.parent)    # not the source tree
    return out.stdout.strip()


@pytest.mark.parametrize("field, rel, predictor, section", [
    ("bssn_Atxy", 1e-3, "interp", 4), ("bssn_Atxy", 1e-3, "swae", 6), ("kolmo_u", 1e-4, "interp", 7)])
def test_decode_identical_across_threads_and_without_torch(tmp_path, field, rel, predictor, section):
    a = datagen.field(field, 20, seed=1)
    path = tmp_path / "chunk.nfc"
    path.write_bytes(nf.encode(a, rel=rel, predictor=predictor))
    assert section in nf.chunk_info(path.read_bytes())["sections"]     # the path under test
    here = hashlib.sha256(nf.decode(path.read_bytes()).tobytes()).hexdigest()
    assert {_decode_in_subprocess(path, 1), _decode_in_subprocess(path, 2),
            _decode_in_subprocess(path, 2, hide_torch=True)} == {here}


def test_encode_is_repeatable():
    a = datagen.field("lognormal_rho", 16, seed=1)
    assert nf.encode(a, rel=1e-3) == nf.encode(a, rel=1e-3)


def test_encode_without_torch_falls_back_to_classical_prediction(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np, pyneuralfilter as nf\n"
            "a = np.cumsum(np.random.default_rng(0).standard_normal((20, 20, 20)), 0).astype('f4')\n"
            "d = nf.encode(a, rel=1e-3)\n"
            "assert nf.chunk_info(d)['model'] is None\n"
            "assert np.abs(nf.decode(d) - a).max() <= 1e-3 * (a.max() - a.min())\n"
            "try:\n"
            "    nf.encode(a, rel=1e-3, predictor='swae')\n"
            "except nf.NeuralFilterError as e:\n"
            "    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert "refused:" in out.stdout and "needs torch" in out.stdout
