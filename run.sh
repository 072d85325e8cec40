#!/usr/bin/env bash
# One entry point for a fresh clone: creates .venv on first use, installs tripletface, runs a job.
#   ./run.sh demo [args]    the main job: synthetic faces, triplet training, one-shot recognition
#   ./run.sh test [args]    the test suite (what CI runs)
#   ./run.sh bench NAME     a benchmark script under bench/ (installs the competitors it measures)
#   ./run.sh ARGS...        any other tripletface command, e.g. ./run.sh identify photo.jpg
# TORCH_SPEC chooses the torch to install first (default torch==2.13.0, a CPU build where a local
# wheel exists); the package itself only asks for torch>=2.2, so any newer release works too.
set -euo pipefail
cd "$(dirname "$0")"
venv=${TRIPLETFACE_VENV:-.venv}
py="$venv/bin/python"

install() {
  [ -x "$py" ] || python3 -m venv "$venv"
  local stamp="$venv/.installed-$1"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$py" -c 'import torch' 2>/dev/null || "$py" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
    "$py" -m pip install -q -e ".[$1]"
    if [ "$1" = bench ]; then "$py" -m pip install -q --no-deps face_recognition; fi
    touch "$stamp"
  fi
}

job=${1:-demo}
[ $# -gt 0 ] && shift
case "$job" in
  test)
    install dev
    "$py" -m ruff check src tests bench
    "$py" -m ruff format --check src tests bench
    exec "$py" -m pytest "$@"
    ;;
  bench)
    install "dev,bench"
    name=${1:?usage: ./run.sh bench NAME (one of: $(ls bench | sed -n 's/\.py$//p' | tr '\n' ' '))}
    shift
    exec "$py" "bench/${name%.py}.py" "$@"
    ;;
  *)
    install dev
    exec "$venv/bin/tripletface" "$job" "$@"
    ;;
esac
