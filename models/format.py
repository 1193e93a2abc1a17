"""Model file format (.nfm): a zip holding the model card, the integer decoder and the encoder.

Entries: ``card.json`` (UTF-8 JSON), ``decoder/<name>.npy`` (integer decoder arrays),
``encoder.pt`` (TorchScript bytes, optional).  The content hash is the sha256 of everything that
decides decoded values: the card fields in HASH_FIELDS (canonical JSON) and every decoder array
(name, dtype, shape, little-endian bytes).  Files are named ``<hash[:16]>.nfm``; the card keeps the
full hash, and ``unpack`` recomputes and checks it.
"""
import hashlib
import io
import json
import zipfile
import zlib

import numpy as np

from ..errors import CorruptChunkError

FORMAT_VERSION = 1
HASH_FIELDS = ("format_version", "architecture", "decoder", "latent_dim", "latent_bits")
_EPOCH = (1980, 1, 1, 0, 0, 0)           # fixed zip timestamps: identical models, identical bytes


class CorruptModelError(CorruptChunkError):
    """A model file is damaged, tampered with, or not a neuralfilter model."""


def content_hash(card, arrays):
    h = hashlib.sha256()
    fields = {k: card.get(k) for k in HASH_FIELDS}
    h.update(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def pack(card, arrays, encoder_bytes=None):
    """-> bytes of a model file; sets card["hash"] (and format_version)."""
    card = dict(card, format_version=FORMAT_VERSION)
    card["hash"] = content_hash(card, arrays)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        def put(name, data):
            z.writestr(zipfile.ZipInfo(name, _EPOCH), data, zipfile.ZIP_DEFLATED)
        put("card.json", json.dumps(card, indent=1, sort_keys=True).encode())
        for name in sorted(arrays):
            b = io.BytesIO()
            np.save(b, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            put(f"decoder/{name}.npy", b.getvalue())
        if encoder_bytes is not None:
            put("encoder.pt", encoder_bytes)
    return buf.getvalue()


def unpack(data, source="<bytes>"):
    """-> (card, arrays, encoder_bytes or None); raises CorruptModelError on any inconsistency."""
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
            card = json.loads(z.read("card.json"))
            arrays = {n[len("decoder/"):-len(".npy")]: np.load(io.BytesIO(z.read(n)), allow_pickle=False)
                      for n in z.namelist() if n.startswith("decoder/") and n.endswith(".npy")}
            enc = z.read("encoder.pt") if "encoder.pt" in z.namelist() else None
    except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, OSError, EOFError,
            NotImplementedError, RuntimeError) as e:   # a flipped flag bit: "patched data", "encrypted"
        raise CorruptModelError(f"{source}: not a readable neuralfilter model file ({e})") from None
    if card.get("format_version") != FORMAT_VERSION:
        raise CorruptModelError(f"{source}: model format version {card.get('format_version')!r} "
                                f"is not supported (this version reads {FORMAT_VERSION})")
    digest = content_hash(card, arrays)
    if card.get("hash") != digest:
        raise CorruptModelError(f"{source}: model content hash mismatch (card says "
                                f"{card.get('hash')}, content is {digest}); the file is damaged "
                                "or was modified")
    return card, arrays, enc
