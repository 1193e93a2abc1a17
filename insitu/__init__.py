"""In-situ hook: MPI ranks exchange 5x5x5 blocks as compact neural codes (mpi4py).

All coding is done by :mod:`pyneuralfilter.blocks`; this package only frames, moves and places
bytes.  See :mod:`.exchange` (point-to-point, blocking and non-blocking) and :mod:`.halo`
(ghost-layer exchange on a 3D Cartesian communicator).  Commands:
``mpiexec -n N python -m pyneuralfilter.insitu.demo`` and ``python -m pyneuralfilter.insitu.latency``.
"""
from .exchange import (DEFAULT_TAG, HEADER_SIZE, MODES, ModelMismatchError, PeerError,
                       RecvRequest, SendRequest, irecv_blocks, isend_blocks, message_size,
                       model_hash, pack_blocks, recv_blocks, send_blocks, sendrecv_blocks,
                       unpack_blocks, waitall)
from .halo import HaloExchange, blocks_to_slab, slab_to_blocks

__all__ = ["DEFAULT_TAG", "HEADER_SIZE", "MODES", "ModelMismatchError", "PeerError",
           "RecvRequest", "SendRequest", "irecv_blocks", "isend_blocks", "message_size",
           "model_hash", "pack_blocks", "recv_blocks", "send_blocks", "sendrecv_blocks",
           "unpack_blocks", "waitall", "HaloExchange", "blocks_to_slab", "slab_to_blocks"]
