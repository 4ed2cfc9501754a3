#!/usr/bin/env bash
# Creates .venv (once) and installs mgrad into it. Installs the pinned CPU wheel of torch first when the
# environment has no torch, so that pip never resolves the open range to a multi-GB CUDA build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MGRAD_VENV:-$root/.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip >/dev/null
"$py" -c "import torch" 2>/dev/null || "$py" -m pip install -q "torch==${MGRAD_TORCH_VERSION:-2.13.0}"
"$py" -m pip install -q -e "$root[${MGRAD_EXTRAS:-test}]"
