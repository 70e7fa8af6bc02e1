#!/usr/bin/env bash
# Resolve the Python environment the project runs in, install the pins of requirements.txt into it if
# they are missing, and print that environment's python on stdout (messages go to stderr).
#
# Which environment (first that applies):
#   QSCOPE_NO_VENV=1 (run_all.sh/run_tests.sh --no-venv)  the python3 on PATH, as it is (conda, system, ...)
#   QSCOPE_VENV=<dir>                                       that environment; created as a venv only if it has no bin/python
#   an active conda env other than base (CONDA_PREFIX)      that conda env
#   otherwise                                               ./.venv (created on first use)
# An existing environment is never re-created; pins already installed are not reinstalled.
#
# Which torch build (QSCOPE_TORCH):
#   cpu (default)  CPU wheel from QSCOPE_TORCH_INDEX (default https://download.pytorch.org/whl/cpu); when
#                  that index is unreachable, pip's own configuration decides (here it serves the CPU wheel)
#   cuda           PyPI's default torch==2.13.0 wheel, which is the CUDA build on Linux (paper profile)
# Pins are checked for agreement in tests/test_project.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${QSCOPE_TORCH:-cpu}"
[[ "$mode" == cpu || "$mode" == cuda ]] || { echo "[bootstrap] QSCOPE_TORCH must be cpu or cuda (got $mode)" >&2; exit 2; }
log() { echo "[bootstrap] $*" >&2; }

if [[ "${QSCOPE_NO_VENV:-0}" == 1 ]]; then
  py="$(command -v python3 || command -v python)"; owned=0; log "using the current environment ($py)"
elif [[ -n "${QSCOPE_VENV:-}" ]]; then
  env="$QSCOPE_VENV"; py="$env/bin/python"; owned=0
elif [[ -n "${CONDA_PREFIX:-}" && "${CONDA_DEFAULT_ENV:-base}" != base ]]; then
  env="$CONDA_PREFIX"; py="$env/bin/python"; owned=0; log "using the active conda env $CONDA_DEFAULT_ENV ($env)"
else
  env="$root/.venv"; py="$env/bin/python"; owned=1
fi
if [[ ! -x "$py" ]]; then
  log "creating $env (first run only)"
  python3 -m venv "$env"; owned=1
fi

# Are the pins (and the wanted torch build) already there? Reads package metadata only: no imports.
if "$py" - "$root/requirements.txt" "$mode" <<'EOF'
import re, sys
from importlib import metadata
req, mode = sys.argv[1], sys.argv[2]
for line in open(req):
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)==(\S+)", line.split("#")[0])
    if not m:
        continue
    try:
        have = metadata.version(m[1])
    except metadata.PackageNotFoundError:
        sys.exit(1)
    if have.split("+")[0] != m[2]:
        sys.exit(1)
    if m[1] == "torch" and mode == "cuda" and have.endswith("+cpu"):
        sys.exit(1)
try:
    metadata.version("qscope-utils")
except metadata.PackageNotFoundError:
    sys.exit(1)
EOF
then
  echo "$py"; exit 0
fi

log "installing the pinned requirements into $("$py" -c 'import sys; print(sys.prefix)') (torch: $mode build)"
[[ "$owned" == 1 ]] && "$py" -m pip install -q --upgrade pip
torch_pin="$(grep -E '^torch==' "$root/requirements.txt")"
if [[ "$mode" == cuda ]]; then
  "$py" -m pip install -q --force-reinstall "$torch_pin"   # PyPI's default Linux wheel: CUDA build + runtime wheels
  if "$py" -c 'import sys, torch; sys.exit(torch.version.cuda is None)'; then :; else
    log "warning: the torch installed is a CPU build (this machine's pip configuration serves it); the paper"
    log "profile needs the CUDA build: pip install --force-reinstall $torch_pin from https://pypi.org/simple"
  fi
else
  index="${QSCOPE_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
  if "$py" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=5)" "$index" 2>/dev/null; then
    "$py" -m pip install -q "$torch_pin" --index-url "$index"
  else
    log "$index is unreachable: torch comes from pip's own configuration"
    "$py" -m pip install -q "$torch_pin"
  fi
fi
"$py" -m pip install -q -r "$root/requirements.txt"
"$py" -m pip install -q --no-deps -e "$root"
if [[ "$owned" == 1 ]]; then
  "$py" -m ipykernel install --prefix "$env" --name python3 >/dev/null
fi
echo "$py"
