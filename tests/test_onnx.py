"""ONNX and TensorRT: the documented export commands, onnxruntime against PyTorch, whole-volume inference."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_fixtures import TINY, cli_args, run_cli

pytest.importorskip("onnxruntime", reason="the ONNX checks need onnx and onnxruntime (pip install mgrad[onnx])")

from mgrad.model_export import export_model, load_bundle_network  # noqa: E402
from mgrad.networks import MGRADUNet  # noqa: E402
from mgrad.onnx_network import OnnxNetwork, export_onnx  # noqa: E402

# the converter arguments documented in bundle/docs/README.md for monai.bundle onnx_export
DYNAMIC = {name: {0: "batch", 2: "height", 3: "width"} for name in ("image", "pred")}
CONVERTER_KWARGS = {"input_names": ["image"], "output_names": ["pred"], "dynamic_axes": DYNAMIC, "dynamo": False}


def assert_matches_pytorch(onnx_path: Path, network: torch.nn.Module) -> None:
    """onnxruntime's logits equal PyTorch's within 1e-3 for other batch sizes and in-plane sizes (multiples of 16)."""
    session = OnnxNetwork(onnx_path, providers=["CPUExecutionProvider"])
    for shape in [(1, 1, 48, 48), (3, 1, 32, 64), (2, 1, 80, 16)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            expected = network(x)
        out = session(x)
        assert out.shape == expected.shape == (shape[0], 9, *shape[2:])
        assert (out - expected).abs().max().item() < 1e-3


def test_exported_model_rejects_the_sizes_the_network_rejects(tmp_path):
    torch.manual_seed(0)
    network = MGRADUNet(2, 1, 3, features=(4, 8, 16), rfb_channels=4).eval()
    session = OnnxNetwork(export_onnx(network, tmp_path / "model.onnx", spatial_size=32))
    x = torch.rand(2, 1, 16, 48)
    with torch.no_grad():
        assert (session(x) - network(x)).abs().max().item() < 1e-4
    for size in [(34, 32), (42, 42)]:  # the graph alone would run on them, unlike the network
        with pytest.raises(ValueError, match=rf"model.onnx needs every spatial size to be a multiple of 4.*{size[0]}"):
            session(torch.rand(1, 1, *size))
        with pytest.raises(ValueError, match="multiple of 4"):
            network(torch.rand(1, 1, *size))


def segment_one_volume(root: Path, image: Path, out: Path, extra_configs: list, **settings) -> nib.Nifti1Image:
    """The bundle's inference (``common`` + ``inference`` + ``extra_configs``) of ``image`` alone, into ``out``."""
    from monai.bundle import run

    inputs = out / "inputs"
    inputs.mkdir(parents=True)
    (inputs / image.name).symlink_to(image)
    configs = root / "configs"
    files = [str(configs / f) for f in ["common.json", "inference.json", *extra_configs]]
    overrides = {"bundle_root": str(root), "dataset_dir": str(inputs), "output_dir": str(out), "size": dict(TINY)}
    run("run", config_file=files, meta_file=str(configs / "metadata.json"), logging_file=False, fast=False,
        **overrides, **settings)  # fmt: skip
    return nib.load(out / image.name.replace(".nii.gz", "_seg.nii.gz"))


@pytest.fixture(scope="module")
def onnx_bundle(trained_bundle, tmp_path_factory):
    """The trained bundle's network exported with ``python -m monai.bundle onnx_export``, as the README says."""
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    root = trained_bundle
    args = ["-m", "monai.bundle", "onnx_export", "network_def", "--filepath", str(path)]
    args += ["--ckpt_file", str(root / "models" / "model.pt")]
    configs = json.dumps([str(root / "configs/common.json"), str(root / "configs/inference.json")])
    args += ["--meta_file", str(root / "configs/metadata.json"), "--config_file", configs]
    args += ["--input_shape", "[2, 1, 48, 48]", "--converter_kwargs", repr(CONVERTER_KWARGS)]  # a Python literal
    args += ["--use_trace", "True"]  # without it MONAI drops the converter's "dynamo" and torch's default exports
    result = run_cli(args + cli_args({"bundle_root": str(root), "size": TINY}))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.export" not in result.stdout + result.stderr  # the TorchScript-based exporter ran
    return path


def test_monai_bundle_onnx_export_matches_pytorch(trained_bundle, onnx_bundle):
    network, _ = load_bundle_network(trained_bundle, size=dict(TINY))
    assert_matches_pytorch(onnx_bundle, network)


def test_mgrad_export_onnx_matches_pytorch(trained_bundle, tmp_path):
    path = export_model("onnx", str(tmp_path / "m.onnx"), str(trained_bundle), size=dict(TINY))
    network, _ = load_bundle_network(trained_bundle, size=dict(TINY))
    assert_matches_pytorch(Path(path), network)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files were left behind"


def test_inference_onnx_config_segments_like_pytorch(trained_bundle, onnx_bundle, phantom_dir, tmp_path):
    image = sorted((phantom_dir / "imagesTr").glob("*.nii.gz"))[0]
    settings = {"onnx_path": str(onnx_bundle), "device": "$torch.device('cpu')"}
    preds = {
        name: segment_one_volume(trained_bundle, image, tmp_path / name, extra, **settings)
        for name, extra in [("torch", []), ("onnx", ["inference_onnx.json"])]
    }
    source = nib.load(image)
    assert preds["onnx"].shape == preds["torch"].shape == source.shape
    np.testing.assert_allclose(preds["onnx"].affine, source.affine, atol=1e-4)
    agreement = (np.asarray(preds["onnx"].dataobj) == np.asarray(preds["torch"].dataobj)).mean()
    assert agreement > 0.999, agreement


def test_trt_export_and_inference_config(trained_bundle, phantom_dir, tmp_path):
    pytest.importorskip("torch_tensorrt", reason="TensorRT export needs torch_tensorrt (NVIDIA GPU machines)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT export needs a CUDA GPU")
    root, configs = trained_bundle, trained_bundle / "configs"
    trt_path = tmp_path / "model_trt.ts"
    args = ["-m", "monai.bundle", "trt_export", "network_def", "--filepath", str(trt_path)]
    args += ["--ckpt_file", str(root / "models" / "model.pt"), "--precision", "fp32"]
    files = json.dumps([str(configs / "common.json"), str(configs / "inference.json")])
    args += ["--meta_file", str(configs / "metadata.json"), "--config_file", files]
    args += ["--use_trace", "True", "--dynamic_batchsize", "[1, 4, 8]", "--input_shape", "[1, 1, 48, 48]"]
    result = run_cli(args + cli_args({"bundle_root": str(root), "size": TINY}))
    assert result.returncode == 0, result.stderr[-3000:]
    image = sorted((phantom_dir / "imagesTr").glob("*.nii.gz"))[0]
    settings = {"trt_path": str(trt_path), "device": "$torch.device('cuda')"}
    preds = {
        name: np.asarray(segment_one_volume(root, image, tmp_path / name, extra, **settings).dataobj)
        for name, extra in [("torch", []), ("trt", ["inference_trt.json"])]
    }
    assert (preds["trt"] == preds["torch"]).mean() > 0.999
