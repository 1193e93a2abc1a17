"""Chunks written by earlier versions of the format still decode to the very same bytes."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import pyneuralfilter as nf

REF = Path(__file__).parent / "reference"
CASES = [(folder, name, meta) for folder in sorted(REF.glob("v*"))
         for name, meta in json.loads((folder / "index.json").read_text()).items()]


def test_reference_chunks_exist():
    assert CASES, "no reference chunks committed (tests/reference/make_reference.py)"


@pytest.mark.parametrize("folder, name, meta", CASES, ids=[f"{f.name}/{n}" for f, n, _ in CASES])
def test_reference_chunk_decodes_identically(folder, name, meta):
    decoded = nf.decode((folder / f"{name}.nfc").read_bytes())
    assert decoded.dtype == np.dtype(meta["dtype"]) and list(decoded.shape) == meta["shape"]
    assert hashlib.sha256(decoded.tobytes()).hexdigest() == meta["sha256_decoded"]
