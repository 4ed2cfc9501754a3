#!/usr/bin/env bash
# MONAI Label check of the bundle (tests/test_monailabel.py), in its own virtual environment.
#
# monailabel 0.8.5 pulls numpy<2 and needs a torchvision that imports, which PyPI ships only beside a CUDA
# build of torch: so this venv (.venv-monailabel, several GB) holds torch 2.14.1 + torchvision 0.29.1, pinned
# through a constraints file in every install so that pip never swaps torch for another build.
# Creates the venv once; later runs reuse it. No arguments; extra arguments go to pytest.
# MGRAD_MONAILABEL_VENV: another venv path.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MGRAD_MONAILABEL_VENV:-$root/.venv-monailabel}"
pins=("torch==2.14.1" "torchvision==0.29.1" "monai==1.6.1" "monailabel==0.8.5")

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
constraints="$venv/monailabel-constraints.txt"
stamp="$venv/.mgrad-monailabel-installed"
printf '%s\n' "${pins[@]}" >"$constraints"
# pip, less the warnings about missing entries of this machine's local package indexes
pip_install() { "$py" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

if [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
    echo "setting up $venv (torch and torchvision first; several GB, a few minutes)"
    pip_install --upgrade pip
    pip_install -c "$constraints" "torch==2.14.1" "torchvision==0.29.1"
    pip_install -c "$constraints" "monailabel==0.8.5" "monai==1.6.1" "pytest>=7"
    # mgrad with its own dependencies (nibabel, pytorch-ignite, fire, scikit-image, h5py, tqdm, tensorboard),
    # still under the same pins
    pip_install -c "$constraints" -e "$root"
    "$py" -c "import torch, torchvision, monai, monailabel; from monailabel.tasks.infer.bundle import BundleInferTask; \
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'monai', monai.__version__, \
'monailabel', monailabel.__version__)"
    echo "${pins[*]}" >"$stamp"
else
    # the checkout may have moved: keep the editable install pointing at this one, without touching the rest
    "$py" -c "import mgrad, os, sys; sys.exit(os.path.dirname(os.path.dirname(mgrad.__file__)) != sys.argv[1])" "$root" \
        || pip_install --no-deps -e "$root"
fi

cd "$root"
exec "$py" -m pytest -m monailabel tests/test_monailabel.py "$@"
