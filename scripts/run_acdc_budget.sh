#!/usr/bin/env bash
# The ACDC comparison behind the results table of bundle/docs/README.md: MGRAD-UNet and MONAI's BasicUNet trained
# with the identical pipeline, data and wall-clock budget, selected on the validation split, scored on the test
# split under the published protocol and MONAI's, beside the paper's Table 2 row.
# Usage: bash scripts/run_acdc_budget.sh ACDC_DIR [SECONDS] [PRESET] [DEVICE]
#   ACDC_DIR: ACDC NIfTI, or the SSL4MIS HDF5 layout (slices/, volumes/, train.list, val.list, test.list);
#   SECONDS: training budget per model (900); PRESET: paper or small (small); DEVICE: e.g. cpu, cuda:0 (default).
# Writes runs/acdc_<PRESET>/table.md and table.json; run it again after an interruption to resume.
set -euo pipefail
data="${1:?usage: run_acdc_budget.sh ACDC_DIR [SECONDS] [PRESET] [DEVICE]}"
budget="${2:-900}"
preset="${3:-small}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
extra=()
[ -n "${4:-}" ] && extra+=(--device "$4")
[ "$preset" = small ] && extra+=(--epochs 1000)  # the small preset runs until the budget is spent
"${MGRAD_VENV:-$root/.venv}/bin/python" -m mgrad reproduce acdc --dataset_dir "$data" --preset "$preset" \
    --time_budget "$budget" --baselines basicunet --output_dir "runs/acdc_${preset}" "${extra[@]}"
