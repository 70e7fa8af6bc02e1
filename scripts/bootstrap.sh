#!/usr/bin/env bash
# Create ./.venv with the pinned environment if it is missing (or if requirements.txt changed).
# Needs only python3 (>=3.10) with venv and pip. torch==2.13.0 resolves to the CPU build here.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${QSCOPE_VENV:-$root/.venv}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "[bootstrap] creating $venv with pinned requirements (first run only)" >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r "$root/requirements.txt"
"$venv/bin/python" -m pip install -q --no-deps -e "$root"
"$venv/bin/python" -m ipykernel install --prefix "$venv" --name python3 >/dev/null
echo "$want" > "$stamp"
