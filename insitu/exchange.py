"""Send and receive arrays of 5x5x5 blocks between MPI ranks as compact neural codes.

The simulation hands over a ``(n, 5, 5, 5)`` float32/float64 array and a peer; the blocks are
encoded with :func:`pyneuralfilter.blocks.encode_blocks`, sent as one MPI message of bytes and
decoded on arrival.  This module only frames and moves bytes: all coding is done by
``pyneuralfilter.blocks``.

Modes
    ``"raw"``      the blocks' bytes as they are (the uncompressed reference, no model)
    ``"fixed"``    latents only: the message size is known in advance
                   (:func:`message_size`), the error is not bounded
    ``"bounded"``  latents plus the bounded residual: every received value is within ``abs``
                   (or ``rel`` times the value range of the message) of the value sent

Message layout (little-endian), one MPI message per call::

    magic "NFX1" | version u8 | mode u8 | dtype u8 | reserved u8 | n blocks u32 |
    payload length u64 | model hash 32 bytes (zeros for raw) | payload

so :data:`HEADER_SIZE` = 52 bytes and, in fixed mode, the message is exactly
``HEADER_SIZE + fixed_payload_size(n, model)`` bytes.

Never hang the peer
    * The receiver learns the size of a message by a matched probe (``MPI_Mprobe`` /
      ``MPI_Improbe``), so no size has to be agreed on or sent first.
    * The receiver checks the header (magic, mode, block count, model hash) after the message
      has been received in full, so a mismatch raises :class:`ModelMismatchError` (naming both
      hashes) on the receiving rank while the sender completes normally.
    * If encoding fails on the sender (bad data, missing model), the sender still sends a short
      error message, then raises; the receiver raises :class:`PeerError` with the sender's message
      instead of waiting forever.
    * :func:`waitall` polls all its requests together and completes every one before it raises
      the first error, so one bad message does not leave other transfers half done.

Example::

    from mpi4py import MPI
    from pyneuralfilter.insitu import isend_blocks, irecv_blocks, waitall
    peer = 1 - comm.rank
    sreq = isend_blocks(comm, blocks, peer, mode="bounded", abs=1e-4)
    rreq = irecv_blocks(comm, peer)
    _, received = waitall([sreq, rreq])
"""
import os
import struct

import numpy as np

from ..errors import CorruptChunkError, NeuralFilterError

__all__ = ["MODES", "HEADER_SIZE", "DEFAULT_TAG", "ModelMismatchError", "PeerError",
           "model_hash", "pack_blocks", "unpack_blocks", "message_size", "isend_blocks",
           "irecv_blocks", "send_blocks", "recv_blocks", "sendrecv_blocks", "waitall",
           "SendRequest", "RecvRequest"]

MODES = ("raw", "fixed", "bounded")
MAGIC = b"NFX1"
VERSION = 1
DEFAULT_TAG = 0x4E46
_MODE_CODE = {"raw": 0, "fixed": 1, "bounded": 2}
_MODE_ERROR = 255                                       # the sender failed; payload = its message
_CODE_MODE = {v: k for k, v in _MODE_CODE.items()}
_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f8")}
_DTYPE_CODE = {v: k for k, v in _DTYPES.items()}
_HEAD = struct.Struct("<4sBBBBIQ32s")
HEADER_SIZE = _HEAD.size
_NO_HASH = bytes(32)


class ModelMismatchError(NeuralFilterError):
    """The peers of an exchange do not use the same model (or mode, or block count)."""


class PeerError(NeuralFilterError):
    """The sending rank failed to encode its blocks; the message carries its error."""


def _mpi():
    from mpi4py import MPI
    return MPI


def _codec():
    from .. import blocks
    return blocks


_HASHES = {}


def model_hash(model=None) -> str:
    """Hex hash of ``model`` (None = the default model, a name, a hash prefix or a Model)."""
    h = getattr(model, "hash", None)
    if h is None:
        if model not in _HASHES:                 # loading a model is not free: once per ref
            from .. import models
            _HASHES[model] = models.load(model).hash
        h = _HASHES[model]
    return h


def _hash_bytes(hexhash):
    raw = bytes.fromhex(hexhash)
    return raw[:32].ljust(32, b"\0")


def _check_args(mode, abs, rel):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "bounded" and (abs is None) == (rel is None):
        raise ValueError("bounded mode needs exactly one of abs= or rel= (got "
                         f"abs={abs!r}, rel={rel!r})")
    for name, v in (("abs", abs), ("rel", rel)):
        if v is not None and not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")


def _check_blocks(blocks):
    blocks = np.asarray(blocks)
    if blocks.ndim != 4 or blocks.shape[1:] != (5, 5, 5):
        raise ValueError(f"blocks must have shape (n, 5, 5, 5), got {blocks.shape}")
    if blocks.dtype.newbyteorder("<") not in _DTYPE_CODE:
        raise ValueError(f"blocks must be float32 or float64, got {blocks.dtype}")
    return blocks


def pack_blocks(blocks, *, mode="bounded", abs=None, rel=None, model=None) -> bytes:
    """Encode ``blocks`` (n, 5, 5, 5) into one message: header + codec payload."""
    _check_args(mode, abs, rel)
    blocks = _check_blocks(blocks)
    dtype = blocks.dtype.newbyteorder("<")
    if mode == "raw":
        payload, h = np.ascontiguousarray(blocks, dtype=dtype).tobytes(), _NO_HASH
    else:
        h = _hash_bytes(model_hash(model))
        kw = {"abs": abs, "rel": rel} if mode == "bounded" else {}
        payload = _codec().encode_blocks(blocks, model=model, mode=mode, **kw)
    head = _HEAD.pack(MAGIC, VERSION, _MODE_CODE[mode], _DTYPE_CODE[dtype], 0,
                      blocks.shape[0], len(payload), h)
    return head + payload


def _error_message(exc) -> bytes:
    text = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:4096]
    return _HEAD.pack(MAGIC, VERSION, _MODE_ERROR, 1, 0, 0, len(text), _NO_HASH) + text


def unpack_blocks(message, *, model=None, mode=None, n=None, check_model=True,
                  source=None) -> np.ndarray:
    """Decode one message made by :func:`pack_blocks` into an (n, 5, 5, 5) array.

    ``model``: the model this rank expects (None = default model); a message coded with another
    model raises :class:`ModelMismatchError` naming both hashes (``check_model=False`` accepts
    any).  ``mode`` / ``n``, when given, must match the header too.
    """
    message = memoryview(message).cast("B")
    peer = "" if source is None else f" from rank {source}"
    if len(message) < HEADER_SIZE:
        raise CorruptChunkError(f"in-situ message{peer} is {len(message)} bytes, shorter than "
                                f"its {HEADER_SIZE}-byte header")
    magic, version, mcode, dcode, _, nblk, plen, h = _HEAD.unpack_from(message)
    if magic != MAGIC:
        raise CorruptChunkError(f"message{peer} is not a neuralfilter in-situ message "
                                f"(magic {bytes(magic)!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise CorruptChunkError(f"in-situ message{peer} has format version {version}; "
                                f"this build reads version {VERSION}")
    if len(message) != HEADER_SIZE + plen:
        raise CorruptChunkError(f"in-situ message{peer} is {len(message)} bytes, its header "
                                f"announces {HEADER_SIZE + plen}")
    payload = message[HEADER_SIZE:]
    if mcode == _MODE_ERROR:
        raise PeerError(f"the sending rank{peer.replace(' from rank', '')} failed to encode its "
                        f"blocks: {bytes(payload).decode('utf-8', 'replace')}")
    if mcode not in _CODE_MODE or dcode not in _DTYPES:
        raise CorruptChunkError(f"in-situ message{peer} has unknown mode {mcode} or "
                                f"dtype {dcode}")
    got_mode = _CODE_MODE[mcode]
    if mode is not None and mode != got_mode:
        raise ModelMismatchError(f"peers disagree on the mode: message{peer} is {got_mode!r}, "
                                 f"this rank expects {mode!r}")
    if n is not None and n != nblk:
        raise ModelMismatchError(f"peers disagree on the message size: message{peer} holds "
                                 f"{nblk} blocks, this rank expects {n}")
    dtype = _DTYPES[dcode]
    if got_mode == "raw":
        if plen != nblk * 125 * dtype.itemsize:
            raise CorruptChunkError(f"raw in-situ message{peer}: {plen} payload bytes for "
                                    f"{nblk} blocks of {dtype}")
        return np.frombuffer(payload, dtype=dtype).reshape(nblk, 5, 5, 5).astype(
            dtype.newbyteorder("="), copy=True)
    if check_model:
        mine = model_hash(model)
        if _hash_bytes(mine) != bytes(h):
            raise ModelMismatchError(
                f"peers disagree on the model: the message{peer} was coded with model "
                f"{bytes(h).hex()}, this rank expects model {mine}; pass the same model= on "
                f"both sides")
    out = np.asarray(_codec().decode_blocks(bytes(payload)))
    if out.shape != (nblk, 5, 5, 5):
        raise CorruptChunkError(f"in-situ message{peer} decoded to shape {out.shape}, "
                                f"its header announces ({nblk}, 5, 5, 5)")
    return out.astype(dtype.newbyteorder("="), copy=False)


def message_size(n, *, mode, model=None, dtype=np.float32):
    """Bytes of the message for ``n`` blocks: exact for raw and fixed, None for bounded."""
    if mode == "raw":
        return HEADER_SIZE + n * 125 * np.dtype(dtype).itemsize
    if mode == "fixed":
        return HEADER_SIZE + _codec().fixed_payload_size(n, model=model)
    if mode == "bounded":
        return None
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


class _Request:
    """Common part of the requests; ``wait``/``test`` follow ``MPI.Request`` habits."""
    _done = False
    _result = None
    _error = None

    def _finish(self):
        if self._error is not None:
            raise self._error
        return self._result

    def Wait(self):                                  # MPI spelling
        return self.wait()

    def Test(self):
        return self.test()


class SendRequest(_Request):
    """A started non-blocking send.  ``nbytes``: bytes on the wire, ``raw_nbytes``: the blocks'
    own bytes.  ``wait()`` returns None (or raises the sender's encoding error)."""

    def __init__(self, request, buf, nbytes, raw_nbytes, error=None):
        self._req, self._buf, self.nbytes, self.raw_nbytes = request, buf, nbytes, raw_nbytes
        self._error = error

    def wait(self):
        if not self._done:
            self._req.Wait()
            self._done, self._buf = True, None
        return self._finish()

    def test(self):
        if not self._done and self._req.Test():
            self._done, self._buf = True, None
        return (self._done, self._finish() if self._done else None)


class RecvRequest(_Request):
    """A pending receive of blocks; ``wait()`` returns the (n, 5, 5, 5) array.

    With a known capacity (``n`` with mode "raw"/"fixed", or ``max_bytes``) a real ``Irecv`` is
    posted at once, so any send pattern of the peer completes.  Otherwise the size is unknown and
    the message is matched (``Mprobe``/``Improbe``) and received when ``test()``/``wait()`` is
    called: then the peer must send with :func:`isend_blocks` (or ``sendrecv_blocks``/``waitall``),
    not with a blocking send while this rank is itself blocked in a blocking send.
    ``source`` / ``nbytes`` are set once the message has arrived.
    """

    def __init__(self, comm, source, tag, expect, capacity=None):
        self._comm, self._src, self._tag, self._expect = comm, source, tag, expect
        self._req = self._buf = None
        self._capacity = capacity
        self._status = _mpi().Status()
        self.source = None
        self.nbytes = None
        if capacity is not None:
            self._buf = bytearray(capacity)
            self._req = comm.Irecv([self._buf, _mpi().BYTE], source, tag)

    def _match(self, message):
        self.nbytes = self._status.Get_count(_mpi().BYTE)
        self._buf = bytearray(self.nbytes)
        self._req = message.Irecv([self._buf, _mpi().BYTE])

    def _complete(self, blocking):
        """Complete the MPI receive; False if not yet arrived (non-blocking)."""
        MPI = _mpi()
        try:
            if blocking:
                self._req.Wait(self._status)
            elif not self._req.Test(self._status):
                return False
        except MPI.Exception as exc:
            self._done, self._buf = True, None
            if exc.Get_error_class() != MPI.ERR_TRUNCATE:
                self._error = exc
            else:
                self._error = ModelMismatchError(
                    f"in-situ message from rank {self._status.Get_source()} is larger than the "
                    f"{self._capacity} bytes expected for {self._expect['n']} blocks in mode "
                    f"{self._expect['mode']!r}: the peers disagree on mode, block count or model")
            return True
        self.source = self._status.Get_source()
        self.nbytes = self._status.Get_count(MPI.BYTE)
        self._done = True
        try:
            self._result = unpack_blocks(memoryview(self._buf)[:self.nbytes], source=self.source,
                                         **self._expect)
        except Exception as exc:                         # kept, re-raised by every wait()
            self._error = exc
        self._buf = None
        return True

    def wait(self):
        if not self._done:
            if self._req is None:
                self._match(self._comm.mprobe(self._src, self._tag, self._status))
            self._complete(blocking=True)
        return self._finish()

    def test(self):
        if not self._done:
            if self._req is None:
                message = self._comm.improbe(self._src, self._tag, self._status)
                if message is None:
                    return (False, None)
                self._match(message)
            if not self._complete(blocking=False):
                return (False, None)
        return (True, self._finish())


def isend_blocks(comm, blocks, dest, tag=DEFAULT_TAG, *, mode="bounded", abs=None, rel=None,
                 model=None) -> SendRequest:
    """Encode ``blocks`` and start sending them to ``dest``; returns a :class:`SendRequest`.

    Bad arguments raise ``ValueError`` before anything is sent.  If the codec fails on the data,
    an error message is sent instead (so the receiver raises :class:`PeerError` rather than
    hanging) and the codec's error is raised by ``wait()``.
    """
    _check_args(mode, abs, rel)
    blocks = _check_blocks(blocks)
    error = None
    try:
        buf = pack_blocks(blocks, mode=mode, abs=abs, rel=rel, model=model)
    except Exception as exc:
        buf, error = _error_message(exc), exc
    req = comm.Isend([buf, _mpi().BYTE], dest, tag)
    return SendRequest(req, buf, len(buf), blocks.nbytes, error)


def irecv_blocks(comm, source, tag=DEFAULT_TAG, *, model=None, mode=None, n=None,
                 check_model=True, max_bytes=None) -> RecvRequest:
    """Start receiving blocks from ``source`` (may be ``MPI.ANY_SOURCE``); returns a
    :class:`RecvRequest` whose ``wait()`` gives the decoded (n, 5, 5, 5) array.  ``model`` is
    the model this rank expects (see :func:`unpack_blocks`).  Giving ``n`` with mode "raw" or
    "fixed" (or ``max_bytes``, an upper bound of the message size) posts the receive at once."""
    capacity = max_bytes
    if capacity is None and n is not None and mode == "raw":
        capacity = message_size(n, mode="raw", dtype=np.float64)      # float32 fits too
    elif capacity is None and n is not None and mode == "fixed" and check_model:
        capacity = message_size(n, mode="fixed", model=model)
    return RecvRequest(comm, source, tag, dict(model=model, mode=mode, n=n,
                                               check_model=check_model), capacity)


def waitall(requests):
    """Complete every request (send or receive) and return their results in order (None for
    sends), like ``MPI.Request.Waitall``; on failure, raise the error of the first failed request
    in list order (the others are noted on it).  The requests are polled together (``test()``), so a
    receive of unknown size is matched while this rank's own sends are still in flight.  All
    requests are completed before the first error is raised, so a failed decode never leaves a
    transfer pending."""
    requests = list(requests)
    results, errors = [None] * len(requests), []
    pending = list(range(len(requests)))
    while pending:
        still = []
        for i in pending:
            try:
                done, res = requests[i].test()
            except Exception as exc:
                done, res = True, None
                errors.append((i, exc))
            if done:
                results[i] = res
            else:
                still.append(i)
        if len(still) == len(pending):
            os.sched_yield()                      # nothing arrived: let the peers run
        pending = still
    if errors:                                    # the first failed request, in list order
        errors = [e for _, e in sorted(errors, key=lambda x: x[0])]
        if len(errors) > 1 and hasattr(errors[0], "add_note"):
            errors[0].add_note(f"{len(errors) - 1} more request(s) failed: "
                               + "; ".join(str(e) for e in errors[1:]))
        raise errors[0]
    return results


def send_blocks(comm, blocks, dest, tag=DEFAULT_TAG, **kw) -> int:
    """Blocking send; returns the bytes sent.  Same keywords as :func:`isend_blocks`."""
    req = isend_blocks(comm, blocks, dest, tag, **kw)
    req.wait()
    return req.nbytes


def recv_blocks(comm, source, tag=DEFAULT_TAG, **kw) -> np.ndarray:
    """Blocking receive; same keywords as :func:`irecv_blocks`."""
    return irecv_blocks(comm, source, tag, **kw).wait()


def sendrecv_blocks(comm, blocks, dest, source, sendtag=DEFAULT_TAG, recvtag=DEFAULT_TAG, *,
                    mode="bounded", abs=None, rel=None, model=None, check_model=True,
                    n=None) -> np.ndarray:
    """Send ``blocks`` to ``dest`` and receive blocks from ``source`` (like ``Sendrecv``)."""
    sreq = isend_blocks(comm, blocks, dest, sendtag, mode=mode, abs=abs, rel=rel, model=model)
    rreq = irecv_blocks(comm, source, recvtag, model=model, n=n, check_model=check_model)
    return waitall([sreq, rreq])[1]
