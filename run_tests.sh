#!/usr/bin/env bash
# The test command: bootstraps ./.venv if missing, then runs pytest. Extra args go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
export QSCOPE_HOME="${QSCOPE_HOME:-$root}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "${QSCOPE_VENV:-$root/.venv}/bin/python" -m pytest -q "$@"
