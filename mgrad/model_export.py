"""``python -m mgrad export``: the bundle's trained network as ONNX or TorchScript, for runtimes without mgrad."""

import json
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.networks.utils import convert_to_torchscript

from mgrad.bundle import bundle_configs, check_overrides, default_bundle_root, standalone_config
from mgrad.onnx_network import export_onnx
from mgrad.writers import atomic_path

__all__ = ["deploy_config", "export_model", "load_bundle_network"]

FORMATS = {"onnx": "model.onnx", "torchscript": "model.ts"}


def load_bundle_network(
    bundle_root: str | Path, ckpt_path: str | None = None, config: str = "inference", **overrides: Any
) -> tuple[torch.nn.Module, ConfigParser]:
    """The bundle's ``network_def`` (from ``configs/<config>.json`` with ``overrides``) with the weights of
    ``ckpt_path`` (default: the config's ``ckpt_path``, i.e. ``models/model.pt``), in eval mode on the CPU; the
    network is built with the settings written beside those weights (``model.json``), as inference builds it.

    Returns:
        The network and the parser, whose other ids (e.g. ``spatial_size``) describe the network's input.

    Raises:
        mgrad.bundle.UnknownOverrideError: for an override that names no config id.
        FileNotFoundError: where the checkpoint is missing.
        ValueError: where the checkpoint does not fit ``network_def``.
    """
    root = Path(bundle_root)
    parser = ConfigParser()
    parser.read_config(bundle_configs(root, [config]))
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    check_overrides(parser, list(overrides))
    if ckpt_path is not None:
        parser["ckpt_path"] = str(ckpt_path)
    for key, value in overrides.items():
        parser[key] = value
    path = Path(parser.get_parsed_content("ckpt_path"))  # the file whose model.json built the network
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found: train the bundle first or pass --ckpt_path")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    network = parser.get_parsed_content("network_def", instantiate=True)
    try:
        network.load_state_dict(checkpoint.get("model", checkpoint))
    except RuntimeError as e:
        raise ValueError(f"checkpoint {path} does not fit the bundle's network_def: {e}") from e
    return network.eval(), parser


def deploy_config(bundle_root: str | Path, settings: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The inference config as MONAI Deploy's bundle operator reads it from a TorchScript file: one file,
    ``extra/inference.json``, parsed alone, beside no ``model.json``. So ``common.json`` and ``inference.json`` are
    merged, and the model's ``settings`` (:func:`mgrad.model_settings.model_settings`) and the export's
    ``overrides`` are written into it.

    Returns:
        the config, as ``json.dump`` writes it.
    """
    parser = ConfigParser(standalone_config(bundle_root, "inference"))
    parser["model_settings"] = dict(settings)
    for key, value in overrides.items():
        parser[key] = value
    return parser.get()


def export_model(
    format: str = "onnx",
    output: str | None = None,
    bundle_root: str | None = None,
    ckpt_path: str | None = None,
    dynamo: bool = False,
    **overrides: Any,
) -> str:
    """Write the bundle's trained network as ``format`` ``onnx`` (default ``models/model.onnx``) or ``torchscript``
    (``models/model.ts``), checked against PyTorch on an example batch.

    The ONNX model takes ``image`` ``(B, C, H, W)`` with B, H and W free (H and W multiples of 16) and returns the
    logits ``pred``; ``configs/inference_onnx.json`` runs it over whole volumes. Bundle ids such as ``--dataset`` or
    ``--preset`` pick the network the checkpoint was trained as; ``--dynamo true`` uses torch's newer exporter.
    The TorchScript file carries ``extra/metadata.json`` and ``extra/inference.json`` (:func:`deploy_config`), which
    MONAI Deploy's bundle operator reads from it.

    Returns:
        The path written.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format '{format}'; choose one of {sorted(FORMATS)}")
    root = Path(bundle_root) if bundle_root is not None else default_bundle_root()
    network, parser = load_bundle_network(root, ckpt_path, **overrides)
    in_channels = int(parser.get_parsed_content("network_def#in_channels"))
    spatial_size = int(parser.get_parsed_content("spatial_size"))
    path = Path(output) if output is not None else root / "models" / FORMATS[format]
    if format == "onnx":
        export_onnx(network, path, in_channels=in_channels, spatial_size=spatial_size, dynamo=dynamo)
    else:
        example = torch.rand(2, in_channels, spatial_size, spatial_size)
        config = deploy_config(root, parser.get_parsed_content("model_settings"), overrides)
        extra_files = {"metadata.json": json.dumps(parser.get("_meta_")), "inference.json": json.dumps(config)}
        with atomic_path(path, keep_name=True) as tmp:  # the archive's top folder is named after the file
            convert_to_torchscript(
                network, str(tmp), extra_files=extra_files, verify=True, inputs=[example], rtol=1e-3, atol=1e-3
            )
    return str(path)
