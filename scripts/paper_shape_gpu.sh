#!/usr/bin/env bash
# Paper-shape dry run on one GPU: the Qwen3-8B shape (hidden 4096, 36 layers, vocab 151,936; W64K SAEs,
# 2.15 GB per layer file), every notebook, bf16 backbone as the paper profile. Needs about 16.4 GB +
# 2 x 2.15 GB of disk per SAE group under $ROOT, and a CUDA build of torch (QSCOPE_TORCH=cuda bootstrap).
# Usage: scripts/paper_shape_gpu.sh [ROOT] [extra args, e.g. --notebooks 01 02 04]
# Results: results/paper-shape/cuda_8B.{csv,json,md} (commit them), executed notebooks under ROOT/runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${1:-${QSCOPE_DATA:-/tmp}/qscope-paper-shape}"; shift || true
PY="${PYTHON:-.venv/bin/python}"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch ' + torch.__version__)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export TOKENIZERS_PARALLELISM=false
"$PY" scripts/paper_shape.py --model 8B --device cuda --root "$ROOT" --timeout 1500 "$@"
cat results/paper-shape/cuda_8B.md
