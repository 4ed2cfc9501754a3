#!/usr/bin/env bash
# Sets up .venv (see setup_env.sh), then the main job on the embedded default (no download): trains MGRAD-UNet
# with the bundle on the synthetic CT phantom (generated into bundle/data/synthetic; a few minutes on a 2-core CPU,
# prints the validation Dice it reached), then segments the validation volumes in their original geometry and
# prints the per-organ 3D metrics. Extra arguments go to the training (e.g. --epochs 5, --device cuda:0).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
py="${MGRAD_VENV:-$root/.venv}/bin/python"
# 210 s of training (the time budget ends the run cleanly and validates it): under 5 minutes in all on any 2-core CPU
"$py" -m mgrad train --time_budget "${MGRAD_MAIN_BUDGET:-210}" "$@"
"$py" -m mgrad evaluate --dataset synthetic --dataset_dir bundle/data/synthetic
