#!/usr/bin/env bash
# neuralfilter developer entry point: installs what it needs, then runs the demo or the tests.
#   ./dev.sh demo    write an HDF5 file through the filter, read it with h5py and h5dump
#   ./dev.sh test    the whole test suite (what CI runs)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${NEURALFILTER_VENV:-.venv}

install() {
  if ! command -v h5dump >/dev/null; then           # the non-Python HDF5 tools (Debian)
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq hdf5-tools libhdf5-dev >/dev/null
  fi
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q ".[torch,test,bench]"
}

case "${1:-}" in
  demo)
    install
    "$VENV/bin/neuralfilter" demo ;;
  test)
    install
    export PATH="$PWD/$VENV/bin:$PATH"
    pytest -q tests
    mpiexec -n 2 pytest -q --with-mpi -m mpi tests
    mpiexec -n 4 pytest -q --with-mpi -m mpi tests ;;
  *)
    echo "usage: ./dev.sh demo | test" >&2; exit 2 ;;
esac
