"""Every config the bundle ships parses and passes MONAI's property checks; the chains match mgrad.transforms."""

import json
import warnings
from pathlib import Path

import pytest
import torch
from bundle_fixtures import REPO, config_files, copy_bundle
from monai.bundle import ConfigParser, ConfigWorkflow

from mgrad.bundle import STANDALONE_CONFIGS, check_overrides, standalone_config
from mgrad.errors import UnknownOptionError, root_cause
from mgrad.model_settings import write_model_settings
from mgrad.transforms import train_transforms, volume_transforms

LAYERS = [  # configs merged in order after common.json, and MONAI's workflow type
    (("train",), "train"),
    (("train", "baseline_basicunet"), "train"),
    (("inference",), "infer"),
    (("inference", "evaluate"), "infer"),
    (("inference", "baseline_basicunet"), "infer"),
]


def workflow(config_file, kind: str, **overrides) -> ConfigWorkflow:
    meta = str(REPO / "bundle" / "configs" / "metadata.json")
    flow = ConfigWorkflow(config_file=config_file, meta_file=meta, workflow_type=kind, logging_file=False, **overrides)
    flow.initialize()
    return flow


@pytest.mark.parametrize("names,kind", LAYERS)
def test_layered_configs_pass_check_properties(names, kind, tmp_path, phantom_dir, monkeypatch):
    root = copy_bundle(tmp_path / "bundle")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # restored after the test
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    flow = workflow(config_files(root, *names), kind, bundle_root=str(root), dataset_dir=str(phantom_dir))
    assert flow.check_properties() == []
    # seeded; cuDNN neither deterministic (MONAI's set_determinism alone would make it so) nor autotuning
    assert not torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert flow.parser.get_parsed_content("network_def").__class__.__name__ in ("MGRADUNet", "BasicUNet")


def test_every_shipped_config_is_checked():
    shipped = {p.stem for p in (REPO / "bundle" / "configs").glob("*.json")} - {"metadata"}
    elsewhere = {"common", "multi_gpu_train", "inference_onnx", "inference_trt"}
    checked = elsewhere | {name for names, _ in LAYERS for name in names}
    # run elsewhere: multi_gpu_train under torchrun (test_bundle_training), inference_onnx with an exported model and
    # inference_trt with torch_tensorrt on a GPU (test_onnx)
    assert shipped == checked
    merged = ConfigParser(ConfigParser.load_config_files(config_files(REPO / "bundle", "train", "multi_gpu_train")))
    assert merged["train#dataloader#sampler"] == "@train#sampler" and "validate#sampler" in merged


@pytest.mark.parametrize("name", STANDALONE_CONFIGS)
def test_standalone_configs_parse_alone(name, tmp_path, phantom_dir):
    """The train.json and inference.json that the exported bundle ships (and MONAI Label reads alone)."""
    root = copy_bundle(tmp_path / "bundle")
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(standalone_config(root, name)))
    kind = "train" if name == "train" else "infer"
    flow = workflow(str(path), kind, bundle_root=str(root), dataset_dir=str(phantom_dir))
    assert flow.check_properties() == []


def test_bundle_chains_equal_the_python_pipelines(phantom_dir):
    parser = ConfigParser(ConfigParser.load_config_files(config_files(REPO / "bundle", "train")))
    parser.update({"dataset_dir": str(phantom_dir), "device": "$torch.device('cpu')"})
    case = {
        k: str(phantom_dir / v)
        for k, v in json.loads((phantom_dir / "dataset.json").read_text())["training"][0].items()
    }
    with warnings.catch_warnings(record=True) as caught:  # every transform built with its current arguments
        warnings.simplefilter("always")
        pairs = [
            (parser.get_parsed_content("validate#preprocessing"), volume_transforms("ct", 96, None, True, 9)),
            (parser.get_parsed_content("train#preprocessing"), train_transforms("ct", 96, 8, 0.7, None, True, 9)),
        ]
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []
    for config_chain, python_chain in pairs:
        assert [type(t) for t in config_chain.transforms] == [type(t) for t in python_chain.transforms]
        config_chain.set_random_state(0)
        python_chain.set_random_state(0)
        a, b = config_chain(dict(case)), python_chain(dict(case))
        for x, y in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])


def test_unknown_override_is_named_with_the_closest_ids():
    parser = ConfigParser(ConfigParser.load_config_files(config_files(REPO / "bundle", "train")))
    check_overrides(parser, ["epochs", "train#dataloader#num_workers", "size"])
    with pytest.raises(UnknownOptionError, match=r"--epoch \(did you mean --epochs"):
        check_overrides(parser, ["epoch"])


@pytest.mark.parametrize("every_slice", [False, True])
def test_monai_label_overrides_reach_the_training_run(every_slice, tmp_path, phantom_dir):
    """What MONAI Label's BundleTrainTask sets on the standalone train.json: ``device`` as a string, and the data
    lists of its datastore as ``train#dataset#data`` and ``validate#dataset#data``."""
    root = copy_bundle(tmp_path / "bundle")
    path = tmp_path / "train.json"
    path.write_text(json.dumps(standalone_config(root, "train")))
    cases = json.loads((phantom_dir / "dataset.json").read_text())["training"]
    data = [{k: str(phantom_dir / case[k]) for k in ("image", "label")} for case in cases]
    parser = ConfigParser()
    parser.read_config(str(path))
    overrides = {
        "bundle_root": str(root),
        "dataset_dir": str(phantom_dir),
        "device": "cpu",
        "every_slice_epoch": every_slice,
        "train#dataset#data": data[:2],
        "validate#dataset#data": data[2:3],
        "train#trainer#max_epochs": 1,
    }
    parser.update(overrides)
    trainer = parser.get_parsed_content("train#trainer")
    dataset = parser.get_parsed_content("train#dataset")
    assert len(dataset) == (2 * 12 if every_slice else 2)  # every slice of both volumes, or both volumes
    assert len(parser.get_parsed_content("validate#dataset")) == 1
    assert trainer.state.max_epochs == 1 and not parser.get_parsed_content("channels_last")


def test_the_baseline_trains_and_evaluates_in_folders_of_its_own(tmp_path):
    """``--configs baseline_basicunet`` in the same bundle neither resumes nor overwrites MGRAD-UNet's run."""
    folders = {}
    for names in (("train",), ("train", "baseline_basicunet"), ("inference", "evaluate", "baseline_basicunet")):
        parser = ConfigParser()
        parser.read_config(config_files(REPO / "bundle", *names))
        parser["bundle_root"] = str(tmp_path)
        keys = ("ckpt_dir", "log_dir") if names[0] == "train" else ("ckpt_path", "output_dir")
        folders[names] = [Path(parser.get_parsed_content(key)) for key in keys]
    mgrad_unet, baseline, evaluation = folders.values()
    assert mgrad_unet == [tmp_path / "models", tmp_path / "logs"]
    assert baseline == [tmp_path / "models" / "basicunet", tmp_path / "logs" / "basicunet"]
    assert evaluation == [tmp_path / "models" / "basicunet" / "model.pt", tmp_path / "eval" / "basicunet"]


@pytest.mark.parametrize("name", ["train", "inference"])
@pytest.mark.parametrize(
    "device,workers", [("cpu", 0), ("cuda:0", 4), ("$torch.device('cpu')", 0), ("$torch.device('cuda', 1)", 4)]
)
def test_loading_workers_follow_the_device_in_use(name, device, workers):
    """Volumes load in worker processes on CUDA only (on a CPU they would take the network's cores), whether the
    device is given as a string (as MONAI Label does) or a ``torch.device``, and whatever else the machine has."""
    parser = ConfigParser()
    parser.read_config(config_files(REPO / "bundle", name))
    parser["device"] = device
    assert parser.get_parsed_content("num_workers") == workers


def inference_settings(models: Path, *layers: str, **overrides) -> dict:
    """The ids that the inference config (with ``layers`` on it) takes from a model's settings, parsed with
    ``models/model.pt``."""
    parser = ConfigParser(ConfigParser.load_config_files(config_files(REPO / "bundle", "inference", *layers)))
    parser.update({"ckpt_path": str(models / "model.pt"), **overrides})
    return {key: parser.get_parsed_content(key) for key in ("preset", "in_channels", "num_classes", "intensity")}


def test_inference_takes_the_settings_the_model_was_trained_with(tmp_path):
    defaults = inference_settings(tmp_path)  # no model.json: the default (synthetic CT) dataset's settings
    assert defaults == {"preset": "small", "in_channels": 1, "num_classes": 9, "intensity": "ct"}
    settings = {"preset": "paper", "in_channels": 1, "num_classes": 4, "intensity": "mri", "dataset": "decathlon"}
    write_model_settings(tmp_path / "model.pt", {**settings, "class_names": ["rv", "myo", "lv"]})
    assert inference_settings(tmp_path) == {key: settings[key] for key in defaults}
    # the command line still decides
    assert inference_settings(tmp_path, intensity="ct", preset="small")["intensity"] == "ct"
    assert inference_settings(tmp_path, load_pretrain=False) == defaults  # random weights: nothing read


def test_inference_builds_the_network_size_the_model_was_trained_with(tmp_path):
    """A model trained with ``--size`` is built as trained, with its preset's inference batch; ``--size`` and another
    ``--preset`` on the command line decide, the model's own preset changes nothing."""
    presets = ConfigParser.load_config_files(config_files(REPO / "bundle"))["size_presets"]
    trained = {"features": [8, 16, 32, 64, 128], "rfb_channels": 8, "spatial_size": 48}
    write_model_settings(tmp_path / "model.pt", {"preset": "small", "size": trained, "num_classes": 4})

    def built(**overrides) -> tuple:
        parser = ConfigParser(ConfigParser.load_config_files(config_files(REPO / "bundle", "inference")))
        parser.update({"ckpt_path": str(tmp_path / "model.pt"), **overrides})
        network = parser.get_parsed_content("network_def")
        widths = [network.encoder[0].conv1.conv.out_channels, network.encoder[-1].conv1.conv.out_channels]
        widths.append(network.rfb_channels)
        return widths, parser.get_parsed_content("spatial_size"), parser.get_parsed_content("batch_size")

    assert built() == ([8, 128, 8], 48, presets["small"]["batch_size"])
    assert built(preset="small") == built()
    assert built(preset="paper") == ([64, 1024, 64], 224, presets["paper"]["batch_size"])
    other = {"features": [4, 8, 16, 32, 64], "rfb_channels": 4, "spatial_size": 32, "batch_size": 2}
    assert built(size=other) == ([4, 64, 4], 32, 2)
    assert built(load_pretrain=False) == ([16, 256, 16], 96, presets["small"]["batch_size"])  # random weights
    (tmp_path / "model.json").unlink()
    assert built() == built(load_pretrain=False)  # weights without settings: the preset, as before
    with pytest.raises(RuntimeError) as raised:
        built(preset="nope")
    assert str(root_cause(raised.value)) == "unknown preset 'nope': the bundle's presets are small, paper"


@pytest.mark.parametrize("name", ["train", "inference"])
def test_a_switch_given_as_lowercase_text_is_refused_by_name(name, tmp_path, phantom_dir):
    # what `python -m monai.bundle run --amp false` hands the config: the text "false", which reads as true
    root = copy_bundle(tmp_path / "bundle")
    config = ConfigParser(standalone_config(root, name))
    config.update({"bundle_root": str(root), "dataset_dir": str(phantom_dir)})
    assert config.get_parsed_content("switches") is None  # the defaults pass
    expression = config["switches"]
    switches = [part.split("=")[0].strip() for part in expression[expression.index("(") + 1 : -1].split(",")]
    assert {"fast_inference", "fuse_activations", "compile_inference"} <= set(switches)
    assert ("amp" in switches) == (name == "train") and ("probabilities" in switches) == (name == "inference")
    for switch in switches:
        parser = ConfigParser(standalone_config(root, name))
        parser.update({"bundle_root": str(root), "dataset_dir": str(phantom_dir), switch: "false"})
        with pytest.raises(RuntimeError) as raised:  # MONAI's error about the expression, raised from mgrad's
            parser.get_parsed_content("switches")
        assert f"--{switch} 'false' arrived as text, which reads as true" in str(root_cause(raised.value))
    assert "@switches" in config["initialize"]


def test_the_evaluation_refuses_figures_given_as_lowercase_text(tmp_path, phantom_dir):
    root = copy_bundle(tmp_path / "bundle")
    configs = config_files(root, "inference", "evaluate")
    assert workflow(configs, "infer", bundle_root=str(root), dataset_dir=str(phantom_dir)).check_properties() == []
    with pytest.raises(RuntimeError) as raised:
        workflow(configs, "infer", bundle_root=str(root), dataset_dir=str(phantom_dir), figures="false")
    assert "--figures 'false' arrived as text" in str(root_cause(raised.value))


def test_exported_models_take_the_settings_of_the_weights_they_were_exported_from(tmp_path):
    """The ONNX and TensorRT configs run an exported file, not ``model.pt``: they read the ``model.json`` of the
    checkpoint it came from (``ckpt_path``), so an MRI model is not windowed as CT with the default's classes; and
    ``mgrad export --ckpt_path`` builds the network with that checkpoint's settings."""
    from mgrad.model_export import load_bundle_network
    from mgrad.networks import MGRADUNet

    settings = {"preset": "small", "in_channels": 1, "num_classes": 4, "intensity": "mri"}
    write_model_settings(tmp_path / "model.pt", {**settings, "class_names": ["rv", "myo", "lv"]})
    for layer in ("inference_onnx", "inference_trt"):
        assert inference_settings(tmp_path, layer) == settings, layer
    size = {"features": [4, 8, 16, 32, 64], "rfb_channels": 4, "spatial_size": 32, "batch_size": 2}
    torch.save(MGRADUNet(2, 1, 4, features=size["features"], rfb_channels=4).state_dict(), tmp_path / "model.pt")
    network, parser = load_bundle_network(REPO / "bundle", str(tmp_path / "model.pt"), size=size)
    assert parser.get_parsed_content("intensity") == "mri" and network.msd.pred.conv.out_channels == 4
