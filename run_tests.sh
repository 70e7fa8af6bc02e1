#!/usr/bin/env bash
# The test command: bootstraps ./.venv if missing, then runs pytest. Extra args go to pytest.
# --no-venv runs in the current environment (e.g. an activated conda env) instead of ./.venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
args=()
for a in "$@"; do
  if [[ "$a" == --no-venv ]]; then export QSCOPE_NO_VENV=1; else args+=("$a"); fi
done
py="$("$root/scripts/bootstrap.sh")"
cd "$root"
export QSCOPE_HOME="${QSCOPE_HOME:-$root}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m pytest -q ${args[@]+"${args[@]}"}
