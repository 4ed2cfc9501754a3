"""``python -m mgrad export-bundle``: the bundle as a zip that ``monai.bundle download`` and MONAI Label take."""

import zipfile
from collections.abc import Iterator
from pathlib import Path

import mgrad
from mgrad.bundle import default_bundle_root
from mgrad.writers import atomic_path

__all__ = ["export_bundle", "BUNDLE_NAME"]

BUNDLE_NAME = "mgrad_unet"
BUNDLE_PARTS = ("configs", "docs", "LICENSE", "large_files.yml")


def _bundle_files(bundle_root: Path, name: str, include_model: bool) -> Iterator[tuple[Path, str]]:
    for part in BUNDLE_PARTS:
        path = bundle_root / part
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            yield f, f"{name}/{f.relative_to(bundle_root).as_posix()}"
    model = bundle_root / "models" / "model.pt"
    if include_model and model.is_file():
        yield model, f"{name}/models/model.pt"
    package = Path(mgrad.__file__).resolve().parent
    for f in sorted(package.rglob("*.py")):
        yield f, f"{name}/mgrad/{f.relative_to(package).as_posix()}"


def export_bundle(
    output: str = f"{BUNDLE_NAME}.zip",
    bundle_root: str | None = None,
    name: str = BUNDLE_NAME,
    include_model: bool = True,
) -> str:
    """Write the bundle to the zip ``output``, all under the top folder ``name``.

    The zip holds ``configs/``, ``docs/``, ``LICENSE``, ``models/model.pt`` (when trained and ``include_model``)
    and a copy of the ``mgrad`` package at its top level: ``monai.bundle run`` puts the bundle folder on
    ``sys.path``, so the downloaded bundle imports mgrad from there where mgrad is not installed. The zip is written
    to a temporary name and renamed. Returns the path written.
    """
    root = Path(bundle_root) if bundle_root is not None else default_bundle_root()
    if not (root / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"{root}: not a bundle folder (no configs/metadata.json)")
    with atomic_path(output) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path, arcname in _bundle_files(root, name, include_model):
                archive.write(path, arcname)
    return str(output)
