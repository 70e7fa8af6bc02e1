#!/usr/bin/env bash
# Run every notebook in order for a profile (default: mini), bootstrapping ./.venv if missing.
#   ./run_all.sh                    # mini profile: builds the mini scope, then all sections
#   ./run_all.sh --profile smoke    # micro sizes, for CI and quick checks
#   ./run_all.sh --profile paper    # real Qwen3 + Qwen-Scope; needs a GPU and hub access (README)
#   ./run_all.sh --only 00 01       # a subset, by number
#   ./run_all.sh --figures [--profile P] [--formats png svg]   # redraw every figure from saved tables (no models)
#   ./run_all.sh --lab [--no-browser]    # JupyterLab at the repo root on this environment's kernel
# Outputs: results/<profile>/ (executed notebooks, figures, tables, timings.json).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
export QSCOPE_HOME="$root" TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
venv="${QSCOPE_VENV:-$root/.venv}"
case "${1:-}" in
  --figures) shift; exec "$venv/bin/python" -m qscope_utils.figures "$@" ;;
  --lab) shift; exec "$venv/bin/jupyter" lab --notebook-dir="$root" "$@" ;;
esac
exec "$venv/bin/python" -m qscope_utils.runner "$@"
