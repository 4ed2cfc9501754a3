#!/usr/bin/env bash
# Sets up .venv (see setup_env.sh) and runs the main job on the embedded default (no download).
# Extra arguments go to the command.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "${MGRAD_VENV:-$root/.venv}/bin/python" -m mgrad demo "$@"
