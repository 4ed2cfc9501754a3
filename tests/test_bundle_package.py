"""The bundle as a package: metadata schema, network in/out, TorchScript export, zip export and download."""

import functools
import http.server
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from bundle_fixtures import REPO, TINY, cli_args, config_arg, config_files, run_cli
from monai.bundle import ConfigParser

from mgrad.export import export_bundle

SCHEMA = REPO / "tests" / "data" / "meta_schema.json"


def test_metadata_is_valid_against_monai_schema():
    meta = REPO / "bundle" / "configs" / "metadata.json"
    result = run_cli(["-m", "monai.bundle", "verify_metadata", "--meta_file", str(meta), "--filepath", str(SCHEMA)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "metadata is verified with no error" in result.stdout + result.stderr
    parsed = ConfigParser.load_config_file(str(meta))
    assert parsed["version"] in parsed["changelog"] and "mgrad" in parsed["required_packages_version"]
    labels = parsed["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert labels["0"] == "background" and len(labels) == 9 and labels["8"] == "stomach"
    acdc = parsed["acdc_data_format"]["outputs"]["pred"]["channel_def"]
    assert acdc == {"0": "background", "1": "rv", "2": "myo", "3": "lv"}


def test_verify_net_in_out():
    configs = REPO / "bundle" / "configs"
    args = ["-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file", str(configs / "metadata.json")]
    args += ["--config_file", config_arg(REPO / "bundle", "inference"), "--device", "cpu", "--n", "4"]
    result = run_cli(args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_torchscript_export_matches_checkpoint(trained_bundle, tmp_path):
    configs = trained_bundle / "configs"
    exported = tmp_path / "model.ts"
    args = ["-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(exported)]
    args += ["--ckpt_file", str(trained_bundle / "models" / "model.pt"), "--meta_file", str(configs / "metadata.json")]
    args += ["--config_file", config_arg(trained_bundle, "inference"), *cli_args({"size": TINY})]
    result = run_cli(args)
    assert result.returncode == 0, result.stderr[-2000:]
    scripted = torch.jit.load(str(exported))
    parser = ConfigParser(ConfigParser.load_config_files(config_files(trained_bundle, "inference")))
    parser["size"] = TINY
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(trained_bundle / "models" / "model.pt", weights_only=True))
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(scripted.eval()(x), net.eval()(x), rtol=1e-4, atol=1e-5)


@pytest.fixture
def loopback_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (folder, base url)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_export_download_and_infer(trained_bundle, phantom_dir, loopback_server, tmp_path):
    www, url = loopback_server
    archive = Path(export_bundle(str(www / "mgrad_unet.zip"), bundle_root=str(trained_bundle)))
    names = zipfile.ZipFile(archive).namelist()
    assert all(n.startswith("mgrad_unet/") for n in names)
    parts = ("configs/metadata.json", "configs/inference.json", "LICENSE", "models/model.pt", "models/model.json")
    for part in (*parts, "mgrad/__init__.py"):
        assert f"mgrad_unet/{part}" in names
    assert not any(n.startswith(("mgrad_unet/data/", "mgrad_unet/eval/", "mgrad_unet/logs/")) for n in names)
    assert "mgrad_unet/models/checkpoint.pt" not in names

    downloads = tmp_path / "downloads"
    args = ["-m", "monai.bundle", "download", "--name", "mgrad_unet", "--url", f"{url}/mgrad_unet.zip"]
    result = run_cli(args + ["--bundle_dir", str(downloads)])
    assert result.returncode == 0, result.stderr[-2000:]
    bundle = downloads / "mgrad_unet"
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "mgrad" / "networks" / "mgrad_unet.py").is_file()

    # as the bundle's docs say: started in the bundle folder, which imports the mgrad copy the bundle carries
    out = tmp_path / "preds"
    args = ["-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
    overrides = {"dataset_dir": str(phantom_dir / "imagesTr"), "output_dir": str(out)}
    result = run_cli(args + cli_args({**overrides, "size": TINY}), cwd=bundle)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list(out.glob("*_seg.nii.gz"))) == 6


def test_export_refuses_a_folder_that_is_no_bundle(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a bundle folder"):
        export_bundle(str(tmp_path / "x.zip"), bundle_root=str(tmp_path))
    assert not (tmp_path / "x.zip").exists()
