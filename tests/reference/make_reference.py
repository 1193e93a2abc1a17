"""Write the reference chunks of this format version (run by hand, once per format version).

    python tests/reference/make_reference.py

Each chunk is stored with the SHA-256 of its decoded bytes; test_reference.py checks that
every later version still decodes them to exactly those bytes.  Existing chunks are never
rewritten: new cases are added.
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

import pyneuralfilter as nf
from pyneuralfilter import container, datagen

HERE = Path(__file__).parent


def cases():
    chi = datagen.field("bssn_chi", 16, seed=1)
    kolmo = datagen.field("kolmo_u", 16, seed=1).astype(np.float64)
    kolmo[1, 2, 3], kolmo[4, 5, 6] = np.nan, -np.inf
    yield "chi16_rel1e-3_interp", chi, dict(rel=1e-3, predictor="interp")
    yield "kolmo16_f64_nan_abs1e-4", kolmo, dict(abs=1e-4, predictor="interp")
    yield "ramp1d_abs1e-2", np.linspace(0, 1, 77, dtype=np.float32), dict(abs=1e-2)
    yield "4d_rel1e-2", np.cos(np.arange(2 * 6 * 7 * 9)).reshape(2, 6, 7, 9).astype(np.float32), \
        dict(rel=1e-2, predictor="interp")
    yield "chi15_swae_general", datagen.field("bssn_chi", 15, seed=1), dict(rel=1e-3, predictor="swae")
    yield "kolmo16_lorenzo_rel1e-4", datagen.field("kolmo_u", 16, seed=1), dict(rel=1e-4)
    yield "atxy16_digest_rel1e-3", datagen.field("bssn_Atxy", 16, seed=1), dict(rel=1e-3)
    # format v2: octave tables (tight bounds), interpolation and Lorenzo
    yield "lognormal16_octave_rel1e-5", datagen.field("lognormal_rho", 16, seed=1), \
        dict(rel=1e-5, predictor="interp")
    yield "kolmo16_lorenzo_octave_rel1e-5", datagen.field("kolmo_u", 16, seed=1), dict(rel=1e-5)
    yield "kolmo20_taps_rel3e-2", datagen.field("kolmo_u", 20, seed=1), dict(rel=3e-2, predictor="interp")
    yield "grayscott16_feedback_rel1e-2", datagen.field("grayscott_u", 16, seed=1, steps=200), \
        dict(rel=1e-2, predictor="interp")
    yield "grayscott24_sparse_params_rel1e-2", datagen.field("grayscott_u", 24, seed=1, steps=200), \
        dict(rel=1e-2, predictor="interp")
    # format v3: our rANS coder (two states), run flags interleaved, Lorenzo summation order
    yield "v3_chi24_runs_rel1e-3", datagen.field("bssn_chi", 24, seed=1), dict(rel=1e-3)
    yield "v3_kolmo16_f64_nan_lorenzo_abs1e-4", kolmo, dict(abs=1e-4)
    yield "v3_grayscott24_feedback_rel1e-2", datagen.field("grayscott_u", 24, seed=1, steps=200), \
        dict(rel=1e-2, predictor="interp")
    yield "v3_lognormal16_octave_rel1e-5", datagen.field("lognormal_rho", 16, seed=1), \
        dict(rel=1e-5, predictor="interp")
    yield "v3_chi15_swae_rel1e-3", datagen.field("bssn_chi", 15, seed=1), dict(rel=1e-3, predictor="swae")
    yield "v3_4d_rel1e-2", np.cos(np.arange(2 * 6 * 7 * 9)).reshape(2, 6, 7, 9).astype(np.float32), \
        dict(rel=1e-2, predictor="interp")
    # format v4: context set 3 (level and gradient bucket; no code magnitudes), with runs and
    # with feedback; and a full-set chunk written by the v4 encoder
    yield "v4_chi24_gradient_set_rel1e-3", datagen.field("bssn_chi", 24, seed=1), dict(rel=1e-3)
    yield "v4_grayscott24_gradient_set_feedback_rel1e-2", \
        datagen.field("grayscott_u", 24, seed=1, steps=200), dict(rel=1e-2, predictor="interp")
    yield "v4_chi24_full_set_rel1e-4", datagen.field("bssn_chi", 24, seed=1), dict(rel=1e-4)
    # format v5: zero gaps (sparse codes spread over every run of 64)
    yield "v5_lognormal32_gaps_rel3e-2", datagen.field("lognormal_rho", 32, seed=1), dict(rel=3e-2)


def check_bound(array, decoded, eb):
    finite = np.isfinite(array)
    if not (np.array_equal(np.isnan(array), np.isnan(decoded))
            and np.array_equal(array[~finite & ~np.isnan(array)], decoded[~finite & ~np.isnan(array)])
            and np.abs(decoded[finite].astype(float) - array[finite]).max() <= eb):
        sys.exit("a reference chunk does not decode within its bound: fix the codec first")


def main():
    version = container.FORMAT_VERSION
    folder = HERE / f"v{version}"
    folder.mkdir(exist_ok=True)
    index_path = folder / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    for name, array, kw in cases():
        path = folder / f"{name}.nfc"
        if any(HERE.glob(f"v*/{name}.nfc")):   # never regenerated, only added
            continue
        data = nf.encode(array, **kw)
        path.write_bytes(data)
        decoded = nf.decode(data)
        check_bound(array, decoded, nf.chunk_info(data)["abs_bound"])
        index[name] = {"sha256_decoded": hashlib.sha256(decoded.tobytes()).hexdigest(),
                       "dtype": str(decoded.dtype), "shape": list(decoded.shape),
                       "encode_args": {k: v for k, v in kw.items()}}
    index_path.write_text(json.dumps(index, indent=1))


if __name__ == "__main__":
    main()
