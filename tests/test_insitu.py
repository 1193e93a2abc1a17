"""In-situ hook (pyneuralfilter.insitu): framing, point-to-point exchange and halo exchange.

Single-rank tests (MPI.COMM_SELF, messages to self) run in plain ``pytest``; tests marked
``mpi`` need ``mpiexec -n 2`` (or 4) ``python -m pytest --with-mpi tests/test_insitu.py``.
"""
import hashlib

import numpy as np
import pytest

MPI = pytest.importorskip("mpi4py.MPI")

from pyneuralfilter import datagen                                     # noqa: E402
from pyneuralfilter.errors import CorruptChunkError, ModelNotFoundError  # noqa: E402
from pyneuralfilter.insitu import (HEADER_SIZE, HaloExchange, ModelMismatchError,  # noqa: E402
                                   PeerError, blocks_to_slab, irecv_blocks, isend_blocks,
                                   message_size, model_hash, pack_blocks, recv_blocks,
                                   send_blocks, sendrecv_blocks, slab_to_blocks, unpack_blocks,
                                   waitall)

FIELD = datagen.field("bssn_chi", 40, seed=1)


def field_blocks(n=64, offset=0, dtype=np.float32):
    """n 5x5x5 blocks cut from the seed-1 chi field (offset picks another set)."""
    b = slab_to_blocks(FIELD)
    return np.roll(b, -offset, axis=0)[:n].astype(dtype)


def eb_for(blocks, rel=1e-3):
    return rel * float(blocks.max() - blocks.min())


def second_model():
    """A model other than the default one, or None when only one is shipped."""
    try:
        h = model_hash("bssn")
    except ModelNotFoundError:
        return None
    return "bssn" if h != model_hash(None) else None


# ------------------------------------------------------------------ single rank (no mpiexec)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_raw_roundtrip_is_exact(dtype):
    b = field_blocks(10, dtype=dtype)
    msg = pack_blocks(b, mode="raw")
    assert len(msg) == message_size(10, mode="raw", dtype=dtype) == HEADER_SIZE + b.nbytes
    out = unpack_blocks(msg)
    assert out.dtype == dtype and np.array_equal(out, b)


@pytest.mark.parametrize("n", [1, 7, 512])
def test_fixed_message_size_is_known_in_advance(n):
    from pyneuralfilter.blocks import fixed_payload_size
    b = field_blocks(n, offset=3)
    msg = pack_blocks(b, mode="fixed")
    assert len(msg) == HEADER_SIZE + fixed_payload_size(n) == message_size(n, mode="fixed")
    out = unpack_blocks(msg, mode="fixed", n=n)
    assert out.shape == (n, 5, 5, 5) and np.isfinite(out).all()


@pytest.mark.parametrize("rel", [1e-2, 1e-4])
def test_bounded_holds_bound_for_every_value(rel):
    b = field_blocks(200, offset=11)
    eb = eb_for(b, rel)
    out = unpack_blocks(pack_blocks(b, mode="bounded", abs=eb))
    assert np.abs(out.astype(np.float64) - b).max() <= eb
    out = unpack_blocks(pack_blocks(b, mode="bounded", rel=rel))
    assert np.abs(out.astype(np.float64) - b).max() <= eb


def test_bad_arguments_raise_before_sending():
    b = field_blocks(2)
    with pytest.raises(ValueError, match="exactly one of abs= or rel="):
        pack_blocks(b, mode="bounded")
    with pytest.raises(ValueError, match="mode must be one of"):
        pack_blocks(b, mode="lossy")
    with pytest.raises(ValueError, match=r"shape \(n, 5, 5, 5\)"):
        pack_blocks(np.zeros((2, 4, 5, 5), np.float32), mode="raw")
    with pytest.raises(ValueError, match="float32 or float64"):
        pack_blocks(np.zeros((2, 5, 5, 5), np.int32), mode="raw")
    with pytest.raises(ValueError, match="positive finite"):
        isend_blocks(MPI.COMM_SELF, b, 0, mode="bounded", abs=-1.0)


def test_corrupt_messages_raise_clearly():
    msg = pack_blocks(field_blocks(3), mode="bounded", rel=1e-3)
    with pytest.raises(CorruptChunkError, match="shorter than"):
        unpack_blocks(msg[:10])
    with pytest.raises(CorruptChunkError, match="header announces"):
        unpack_blocks(msg[:-1])
    with pytest.raises(CorruptChunkError, match="not a neuralfilter in-situ message"):
        unpack_blocks(b"XXXX" + msg[4:])
    with pytest.raises(ModelMismatchError, match="holds 3 blocks, this rank expects 4"):
        unpack_blocks(msg, n=4)
    with pytest.raises(ModelMismatchError, match="'bounded', this rank expects 'fixed'"):
        unpack_blocks(msg, mode="fixed")


def _tamper_hash(msg, new=b"\xab" * 32):
    return msg[:HEADER_SIZE - 32] + new + msg[HEADER_SIZE:]


def test_model_mismatch_names_both_hashes():
    msg = pack_blocks(field_blocks(4), mode="fixed")
    other = second_model()
    if other is not None:
        mine, theirs = model_hash(other), model_hash(None)
        with pytest.raises(ModelMismatchError) as err:
            unpack_blocks(msg, model=other)
    else:                                   # one shipped model: alter the header's hash
        mine, theirs = model_hash(None), "ab" * 32
        with pytest.raises(ModelMismatchError) as err:
            unpack_blocks(_tamper_hash(msg))
    assert mine in str(err.value) and theirs in str(err.value)
    # the check can be switched off only deliberately
    assert unpack_blocks(msg, check_model=False).shape == (4, 5, 5, 5)


def test_self_exchange_nonblocking_and_blocking():
    comm = MPI.COMM_SELF
    b = field_blocks(30, offset=5)
    eb = eb_for(b)
    sreq = isend_blocks(comm, b, 0, tag=7, mode="bounded", abs=eb)
    rreq = irecv_blocks(comm, 0, tag=7)
    res = waitall([sreq, rreq])
    assert res[0] is None and rreq.source == 0 and rreq.nbytes == sreq.nbytes
    assert np.abs(res[1].astype(np.float64) - b).max() <= eb
    assert sreq.raw_nbytes == b.nbytes
    # the same blocks decode identically whatever path carried them
    assert np.array_equal(res[1], unpack_blocks(pack_blocks(b, mode="bounded", abs=eb)))
    out = sendrecv_blocks(comm, b, 0, 0, mode="bounded", abs=eb)
    assert np.array_equal(out, res[1])
    # test() polls without blocking; a receive of known size is posted at once, so even a
    # blocking send to self completes
    for n, mode in ((30, "raw"), (None, None)):
        rreq = irecv_blocks(comm, 0, tag=9, n=n, mode=mode)
        assert rreq.test() == (False, None)
        if n is None:
            sreq = isend_blocks(comm, b, 0, tag=9, mode="raw")
        else:
            send_blocks(comm, b, 0, tag=9, mode="raw")
        while True:
            done, got = rreq.test()
            if done:
                break
        assert np.array_equal(got, b) and rreq.source == 0
        if n is None:
            sreq.wait()


def test_larger_message_than_expected_is_a_clear_error():
    comm = MPI.COMM_SELF
    rreq = irecv_blocks(comm, 0, tag=5, n=2, mode="fixed")
    sreq = isend_blocks(comm, field_blocks(50), 0, tag=5, mode="fixed")
    with pytest.raises(ModelMismatchError, match="disagree"):
        waitall([rreq, sreq])


def test_encoding_failure_reaches_the_receiver():
    comm = MPI.COMM_SELF
    sreq = isend_blocks(comm, field_blocks(2), 0, tag=3, mode="fixed", model="0123456789abcdef")
    rreq = irecv_blocks(comm, 0, tag=3)
    with pytest.raises(PeerError, match="failed to encode"):
        rreq.wait()
    with pytest.raises(ModelNotFoundError):
        sreq.wait()
    # waitall completes every request before raising
    sreq = isend_blocks(comm, field_blocks(2), 0, tag=4, mode="fixed", model="0123456789abcdef")
    rreq = irecv_blocks(comm, 0, tag=4)
    with pytest.raises(ModelNotFoundError) as err:
        waitall([sreq, rreq])
    assert "failed to encode" in str(getattr(err.value, "__notes__", [""])[0])
    with pytest.raises(PeerError):        # completed, its error kept
        rreq.test()


@pytest.mark.parametrize("shape", [(5, 5, 5), (7, 3, 12), (10, 15, 1)])
def test_slab_blocks_roundtrip(shape):
    a = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    b = slab_to_blocks(a)
    assert b.shape == (int(np.prod([-(-s // 5) for s in shape])), 5, 5, 5)
    assert np.array_equal(blocks_to_slab(b, shape), a)


def _global_ghosts(field, shape, starts, h, periods):
    """Reference local array with ghosts read from the global field (NaN outside it)."""
    idx = []
    for d in range(3):
        i = np.arange(starts[d] - h, starts[d] + shape[d] + h)
        n = field.shape[d]
        idx.append(np.mod(i, n) if periods[d] else i)
    pad = np.pad(field.astype(np.float64), h, constant_values=np.nan)
    sel = np.ix_(*[(i if periods[d] else i + h) for d, i in enumerate(idx)])
    return (pad[sel] if not all(periods) else field[np.ix_(*idx)]).astype(np.float64)


@pytest.mark.parametrize("h", [1, 2, 5, 6])
@pytest.mark.parametrize("corners", [False, True])
def test_halo_single_rank_periodic(h, corners):
    cart = MPI.COMM_SELF.Create_cart([1, 1, 1], periods=[True] * 3)
    try:
        f = FIELD[:20, :15, :8]            # z thinner than 5*ceil(h/5) for h=6: padded slab
        local = np.zeros(tuple(s + 2 * h for s in f.shape), np.float32)
        inner = tuple(slice(h, h + s) for s in f.shape)
        local[inner] = f
        ref = _global_ghosts(f, f.shape, (0, 0, 0), h, (True,) * 3)
        raw = HaloExchange(cart, f.shape, h, mode="raw", corners=corners)
        out = raw.exchange(local.copy())
        faces = _face_mask(f.shape, h, corners)
        assert np.array_equal(out[faces], ref[faces].astype(np.float32))
        if not corners:
            assert raw.messages == 6
            assert raw.raw_bytes == 4 * h * 2 * (20 * 15 + 20 * 8 + 15 * 8)
        eb = eb_for(f, 1e-3)
        bnd = HaloExchange(cart, f.shape, h, mode="bounded", abs=eb, corners=corners)
        got = bnd.exchange(local.copy())
        assert np.abs(got[faces] - ref[faces]).max() <= eb
        assert np.array_equal(got[inner], f)            # interior untouched
    finally:
        cart.Free()


def _face_mask(shape, h, corners):
    """Where the halo exchange writes: interior plus face ghosts (plus edges/corners)."""
    full = tuple(s + 2 * h for s in shape)
    if corners:
        return np.ones(full, bool)
    m = np.zeros(full, bool)
    for d in range(3):
        idx = [slice(h, h + s) for s in shape]
        idx[d] = slice(None)
        m[tuple(idx)] = True
    return m


def test_halo_rejects_wrong_field_shape():
    cart = MPI.COMM_SELF.Create_cart([1, 1, 1], periods=[False] * 3)
    try:
        ex = HaloExchange(cart, (10, 10, 10), 2, mode="raw")
        with pytest.raises(ValueError, match="expects"):
            ex.exchange(np.zeros((10, 10, 10), np.float32))
        with pytest.raises(ValueError, match="3D Cartesian"):
            HaloExchange(MPI.COMM_SELF, (10, 10, 10), 2, mode="raw")
    finally:
        cart.Free()


# ------------------------------------------------------------------ several ranks (mpiexec)
@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("mode", ["fixed", "bounded"])
def test_ring_exchange_sizes_and_bound(mode):
    comm = MPI.COMM_WORLD
    r, p = comm.rank, comm.size
    b = field_blocks(100, offset=17 * r)
    eb = eb_for(FIELD, 1e-3)
    kw = {"abs": eb} if mode == "bounded" else {}
    sreq = isend_blocks(comm, b, (r + 1) % p, mode=mode, **kw)
    rreq = irecv_blocks(comm, (r - 1) % p)
    got = waitall([sreq, rreq])[1]
    sent_by_src = field_blocks(100, offset=17 * ((r - 1) % p))
    assert rreq.source == (r - 1) % p
    if mode == "fixed":
        assert sreq.nbytes == rreq.nbytes == message_size(100, mode="fixed")
    else:
        assert np.abs(got.astype(np.float64) - sent_by_src).max() <= eb
    # the receiver gets exactly what a local decode of the sender's blocks gives
    assert np.array_equal(got, unpack_blocks(pack_blocks(sent_by_src, mode=mode, **kw)))


@pytest.mark.mpi(min_size=2)
def test_results_do_not_depend_on_rank_order():
    comm = MPI.COMM_WORLD
    r = comm.rank
    b = field_blocks(64, offset=40)                       # the same blocks on every rank
    eb = eb_for(FIELD, 1e-4)
    digests = []
    if r < 2:
        peer = 1 - r
        # order A: rank 0 sends first; order B: rank 1 sends first; then sendrecv
        for first in (0, 1):
            if r == first:
                send_blocks(comm, b, peer, mode="bounded", abs=eb)
                x = recv_blocks(comm, peer)
            else:
                x = recv_blocks(comm, peer)
                send_blocks(comm, b, peer, mode="bounded", abs=eb)
            digests.append(hashlib.sha256(x.tobytes()).hexdigest())
        x = sendrecv_blocks(comm, b, peer, peer, mode="bounded", abs=eb)
        digests.append(hashlib.sha256(x.tobytes()).hexdigest())
        assert np.abs(x.astype(np.float64) - b).max() <= eb
    msg = pack_blocks(b, mode="bounded", abs=eb)
    everyone = comm.allgather((digests, hashlib.sha256(msg).hexdigest()))
    assert len({m for _, m in everyone}) == 1             # same bytes on every rank
    ds = [d for ds, _ in everyone for d in ds]
    assert len(ds) == 6 and len(set(ds)) == 1


def _cart_setup(comm, periods, n=(23, 21, 26)):
    dims = MPI.Compute_dims(comm.size, 3)
    cart = comm.Create_cart(dims, periods=periods)
    coords = cart.Get_coords(cart.rank)
    starts, shape = [], []
    for d in range(3):
        edges = np.linspace(0, n[d], dims[d] + 1).astype(int)
        starts.append(int(edges[coords[d]]))
        shape.append(int(edges[coords[d] + 1] - edges[coords[d]]))
    return cart, tuple(shape), tuple(starts)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("h,corners", [(1, False), (3, True), (6, False)])
def test_halo_matches_uncompressed_exchange(periodic, h, corners):
    comm = MPI.COMM_WORLD
    g = datagen.field("bssn_alpha", 26, seed=1)[:23, :21, :26]
    cart, shape, starts = _cart_setup(comm, [periodic] * 3, g.shape)
    try:
        local = np.zeros(tuple(s + 2 * h for s in shape), np.float32)
        inner = tuple(slice(h, h + s) for s in shape)
        local[inner] = g[tuple(slice(a, a + s) for a, s in zip(starts, shape))]
        ref = _global_ghosts(g, shape, starts, h, [periodic] * 3)
        faces = _face_mask(shape, h, corners) & np.isfinite(ref)
        raw = HaloExchange(cart, shape, h, mode="raw", corners=corners).exchange(local.copy())
        assert np.array_equal(raw[faces], ref[faces].astype(np.float32))
        eb = eb_for(g, 1e-3)
        ex = HaloExchange(cart, shape, h, mode="bounded", abs=eb, corners=corners)
        got = ex.start(local.copy()).wait()
        assert np.abs(got[faces].astype(np.float64) - raw[faces]).max() <= eb
        assert ex.bytes_sent > 0 and ex.raw_bytes > 0
        fx = HaloExchange(cart, shape, h, mode="fixed", corners=corners)
        got = fx.exchange(local.copy())
        assert np.isfinite(got[faces]).all()
    finally:
        cart.Free()


@pytest.mark.mpi(min_size=2)
def test_model_mismatch_between_peers_raises_and_never_hangs():
    comm = MPI.COMM_WORLD
    pair = comm.Split(0 if comm.rank < 2 else MPI.UNDEFINED, comm.rank)
    try:
        if pair != MPI.COMM_NULL:
            r, peer = pair.rank, 1 - pair.rank
            b = field_blocks(8, offset=r)
            other = second_model()
            hashes = [model_hash(None), model_hash(other) if other else "ab" * 32]
            mine = [None, other][r]
            # (1) both directions at once: each rank raises, naming both hashes
            if other is not None:
                with pytest.raises(ModelMismatchError) as err:
                    sendrecv_blocks(pair, b, peer, peer, mode="fixed", model=mine)
            else:                       # one shipped model: the peer's header names another
                sreq = pair.Isend([_tamper_hash(pack_blocks(b, mode="fixed")), MPI.BYTE],
                                  peer, 11)
                with pytest.raises(ModelMismatchError) as err:
                    recv_blocks(pair, peer, 11)
                sreq.Wait()
            assert hashes[0] in str(err.value) and hashes[1] in str(err.value)
            # (2) one direction: the receiver raises, the sender completes normally
            if r == 0:
                if other is not None:
                    assert send_blocks(pair, b, 1, tag=12, mode="fixed") > HEADER_SIZE
                else:
                    pair.Send([_tamper_hash(pack_blocks(b, mode="fixed")), MPI.BYTE], 1, 12)
            else:
                with pytest.raises(ModelMismatchError) as err:
                    recv_blocks(pair, 0, tag=12, model=other)
                assert hashes[0] in str(err.value) and hashes[1] in str(err.value)
            # (3) the pair still communicates afterwards
            assert pair.allreduce(1) == 2
            pair.Free()
        # (4) halo exchange set up with different models: every rank raises, none waits
        cart = comm.Create_cart([comm.size, 1, 1], periods=[True] * 3)
        try:
            bad = (second_model() or "0123456789abcdef") if comm.rank == 1 else None
            with pytest.raises((ModelMismatchError, ModelNotFoundError)) as err:
                HaloExchange(cart, (5, 5, 5), 1, mode="fixed", model=bad)
            if comm.rank != 1:
                assert "disagree" in str(err.value) or "not found" in str(err.value).lower()
        finally:
            cart.Free()
    finally:
        comm.Barrier()


def _recv_bytes(comm, source, tag):
    st = MPI.Status()
    comm.Probe(source, tag, st)
    buf = bytearray(st.Get_count(MPI.BYTE))
    comm.Recv([buf, MPI.BYTE], source, tag)
    return buf
