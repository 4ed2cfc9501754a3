"""Running the MONAI bundle from Python and from ``python -m mgrad``: a thin front over ``monai.bundle.run``."""

import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from monai.bundle import run as run_bundle

from mgrad.engines.evaluator import CaseFailures

__all__ = ["default_bundle_root", "bundle_configs", "config_names", "run_config", "train", "infer"]


def default_bundle_root() -> Path:
    """``$MGRAD_BUNDLE``, else the ``bundle/`` folder of the repository this package was installed from."""
    env = os.environ.get("MGRAD_BUNDLE")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "bundle"


def bundle_configs(bundle_root: Union[str, Path], names: Sequence[str]) -> List[str]:
    """Paths of ``configs/<name>.json`` under ``bundle_root``; a missing one raises ``FileNotFoundError``."""
    paths = [Path(bundle_root) / "configs" / f"{name}.json" for name in names]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: pass --bundle_root pointing at the mgrad bundle (a folder with configs/)."
            )
    return [str(p) for p in paths]


def run_config(
    names: Sequence[str], bundle_root: Optional[Union[str, Path]] = None, run_id: str = "run", **overrides: Any
) -> Any:
    """``monai.bundle.run(run_id)`` on the bundle's ``configs/<name>.json`` files merged in order, with overrides.

    A plain ``device`` such as ``"cpu"`` or ``"cuda:1"`` becomes the ``torch.device`` the configs expect.
    """
    root = Path(bundle_root) if bundle_root is not None else default_bundle_root()
    device = overrides.get("device")
    if isinstance(device, str) and not device.startswith("$"):
        overrides["device"] = f"$torch.device('{device}')"
    configs = bundle_configs(root, names)
    return run_bundle(
        run_id,
        meta_file=str(root / "configs" / "metadata.json"),
        config_file=configs if len(configs) > 1 else configs[0],
        logging_file=str(root / "configs" / "logging.conf"),
        bundle_root=str(root),
        **overrides,
    )


def train(
    bundle_root: Optional[str] = None, multi_gpu: bool = False, configs: Sequence[str] = (), **overrides: Any
) -> None:
    """Train MGRAD-UNet with the bundle's ``train.json`` (plus ``multi_gpu_train.json`` under torchrun).

    Any bundle id can be overridden, e.g. ``--dataset acdc_h5 --dataset_dir DIR --epochs 50 --preset paper
    --time_budget 1800 --device cpu``; ``--configs NAME`` layers more of the bundle's configs on top (e.g.
    ``baseline_basicunet``: MONAI's BasicUNet through the identical pipeline). The best model goes to
    ``<bundle_root>/models/model.pt``.
    """
    names = ["train", *config_names(configs), *(["multi_gpu_train"] if multi_gpu else [])]
    run_config(names, bundle_root, **overrides)


def config_names(configs: Union[str, Sequence[str]]) -> List[str]:
    """A config name or a list of them (fire passes one ``--configs NAME`` as a string)."""
    return [configs] if isinstance(configs, str) else list(configs)


def infer(
    input: str,
    output_dir: str,
    bundle_root: Optional[str] = None,
    ckpt_path: Optional[str] = None,
    configs: Sequence[str] = (),
    **overrides: Any,
) -> None:
    """Segment every volume in folder ``input`` (or a datalist ``.json``); write NIfTI predictions to ``output_dir``.

    Predictions have each input's shape, affine and orientation. ``ckpt_path`` defaults to the bundle's
    ``models/model.pt``; other bundle ids (``--dataset``, ``--preset``, ``--fast false``) can be overridden.
    A case that fails is reported and the others are still processed; the exit status is 1 if any failed.
    ``--dataset NAME`` picks the preprocessing and classes of a dataset (the config's ``dataset_name``);
    ``--configs NAME`` layers more of the bundle's configs on top, as for :func:`train`.
    """
    if "dataset" in overrides:
        overrides["dataset_name"] = overrides.pop("dataset")
    if ckpt_path is not None:
        overrides["ckpt_path"] = ckpt_path
    try:
        names = ["inference", *config_names(configs)]
        run_config(names, bundle_root, dataset_dir=input, output_dir=output_dir, **overrides)
    except CaseFailures as e:
        print(e)
        raise SystemExit(1) from None
