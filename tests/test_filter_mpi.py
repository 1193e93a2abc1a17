"""Two MPI ranks each write and read their own file through the filter.

Run: mpiexec -n 2 python -P -m pytest --with-mpi tests/test_filter_mpi.py
(skipped without --with-mpi; -P keeps the source tree off sys.path so the installed package runs)
"""
import numpy as np
import pytest


@pytest.mark.mpi(min_size=2)
def test_ranks_write_own_files(tmp_path_factory):
    from mpi4py import MPI
    h5py = pytest.importorskip("h5py")
    from pyneuralfilter import Neural

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    base = comm.bcast(str(tmp_path_factory.mktemp("mpi")) if rank == 0 else None, root=0)
    path = f"{base}/rank{rank}.h5"
    g = np.meshgrid(*[np.linspace(0, 1, 24)] * 3, indexing="ij")
    a = (np.sin(4 * g[0] + rank) * g[1] + g[2]).astype(np.float32)
    with h5py.File(path, "w") as f:  # one file per rank, serial HDF5
        f.create_dataset("x", data=a, chunks=(12, 12, 12), **Neural(abs=1e-3))
        f.attrs["rank"] = rank
    comm.Barrier()
    other = (rank + 1) % comm.Get_size()
    with h5py.File(f"{base}/rank{other}.h5", "r") as f:
        b = f["x"][...]
        assert f.attrs["rank"] == other
        assert f["x"].id.get_storage_size() < b.nbytes
    expect = (np.sin(4 * g[0] + other) * g[1] + g[2]).astype(np.float32)
    err = float(np.abs(b - expect).max())
    assert comm.allreduce(err, op=MPI.MAX) <= 1e-3
