#!/usr/bin/env bash
# Run every notebook in order for a profile (default: mini), bootstrapping ./.venv if missing.
#   ./run_all.sh                        # mini profile: builds the mini scope, then all sections
#   ./run_all.sh --profile smoke        # micro sizes, for CI and quick checks
#   QSCOPE_TORCH=cuda ./run_all.sh --profile paper   # real Qwen3 + Qwen-Scope on a GPU (00 is skipped)
#   ./run_all.sh --only 00 1            # a subset, by number (1 = 01)
#   ./run_all.sh --seed 1               # build seed 1: data/mini-seed1, results/mini-seed1 (seed 0 = data/mini)
#   ./run_all.sh --seeds 3              # seeds 0, 1, 2 (build + every notebook each, 3x the time), then the
#                                       # across-seed summary in results/mini-seeds/ (scripts/summarize.py --seeds)
#   ./run_all.sh --only 02 -p layer 18  # notebook parameters, as papermill's -p / -y
#   ./run_all.sh --no-venv ...          # run in the current environment (conda, ...) instead of ./.venv
#   ./run_all.sh --profile paper --plan # per notebook: downloads, peak GPU memory, GPU time; runs nothing
#   ./run_all.sh --figures [--profile P] [--formats png svg]   # redraw every figure from saved tables (no models)
#   ./run_all.sh --lab [--no-browser]   # JupyterLab at the repo root on this environment's kernel
# Outputs: results/<profile>/ (executed notebooks, figures, tables, timings.json).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
args=()
for a in "$@"; do
  if [[ "$a" == --no-venv ]]; then export QSCOPE_NO_VENV=1; else args+=("$a"); fi
done
py="$("$root/scripts/bootstrap.sh")"
cd "$root"
export QSCOPE_HOME="$root" TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
set -- ${args[@]+"${args[@]}"}
case "${1:-}" in
  --figures) shift; exec "$py" -m qscope_utils.figures "$@" ;;
  --lab) shift; [[ "$(id -u)" == 0 ]] && set -- --allow-root "$@"    # containers often run as root
         exec "$py" -m jupyterlab --notebook-dir="$root" "$@" ;;
esac
exec "$py" -m qscope_utils.runner "$@"
