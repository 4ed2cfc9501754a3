#!/usr/bin/env bash
# The GPU check on a bare GPU machine without network (torch with CUDA there; monai, nibabel, pytorch-ignite, fire
# and termcolor given as wheels): installs the wheels, then runs scripts/gpu_check.py, which writes every figure to
# OUT_DIR/gpu_check.json (see its docstring). The default parts (the training step, a 90 s reproduction, inference,
# the feedback's precision, a profile) take about 8.5 minutes on one H100/H200, and never more than 9 with the
# installation: they share a budget of 510 s (--budget), and a part without time left is recorded as skipped. The
# compiled parts run on their own: --parts compile --budget 560 (training: a cold warm-up of over 5.5 minutes on an
# H200, then one from the cache), --parts inference_compile (up to 6 minutes); --parts loss (the fused aggregated
# loss against the unfused one) takes about half a minute.
#   bash scripts/gpu_check.sh OUT_DIR [WHEEL_DIR (.device/whl)] [gpu_check.py options: --parts, --budget, ...]
# --archive FILE.tar.gz packs OUT_DIR (the report, every log, the profile) into one file as well.
# The wheels and the packed ACDC data are made with ../shared/device/README.md's commands.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash scripts/gpu_check.sh OUT_DIR [WHEEL_DIR] [options]}"
shift
wheels=.device/whl
if [[ $# -gt 0 && "$1" != --* ]]; then  # a wheel folder given before the options
    wheels="$1"
    shift
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$wheels"/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec python3 scripts/gpu_check.py --out "$out" "$@"
