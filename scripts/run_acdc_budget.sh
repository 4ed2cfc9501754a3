#!/usr/bin/env bash
# The ACDC CPU-budget comparison behind the results table of bundle/docs/README.md: MGRAD-UNet and MONAI's BasicUNet
# trained with the identical pipeline, data and wall-clock budget, then scored per class in 3D on the validation
# volumes. Usage: bash scripts/run_acdc_budget.sh ACDC_DIR [SECONDS] [PRESET]
#   ACDC_DIR: the SSL4MIS HDF5 layout (slices/, volumes/, train.list, val.list); SECONDS: budget per model (900).
# Each row writes runs/acdc_<row>/{models,logs,eval}; eval/metrics.json holds mean_dice.
set -euo pipefail
data="${1:?usage: run_acdc_budget.sh ACDC_DIR [SECONDS] [PRESET]}"
budget="${2:-900}"
preset="${3:-small}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
py="${MGRAD_VENV:-$root/.venv}/bin/python"
for row in mgrad_unet basicunet; do
    out="runs/acdc_${row}_${preset}"
    extra=()
    [ "$row" = basicunet ] && extra=(--configs baseline_basicunet)
    start=$(date +%s)
    "$py" -m mgrad train --dataset acdc_h5 --dataset_dir "$data" --preset "$preset" --time_budget "$budget" \
        --epochs 1000 --val_interval 1 --resume false --ckpt_dir "$out/models" --log_dir "$out/logs" "${extra[@]}"
    echo "$row: training took $(( $(date +%s) - start )) s"
    "$py" -m mgrad evaluate --dataset acdc_h5 --dataset_dir "$data" --preset "$preset" \
        --ckpt_path "$out/models/model.pt" --output_dir "$out/eval" "${extra[@]}"
done
