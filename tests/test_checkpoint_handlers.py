"""Resuming a run: its own checkpoint loads (also into a network wrapped for data parallelism, as torchrun's is),
another network's stops the run before anything is written. The best model is saved with its settings."""

import pytest
import torch
from ignite.engine import Engine, Events
from monai.networks.nets import BasicUNet

from mgrad.handlers import AtomicCheckpointSaver, ResumeCheckpointLoader
from mgrad.model_settings import model_settings, write_model_settings
from mgrad.networks import MGRADUNet


def network() -> MGRADUNet:
    return MGRADUNet(2, 1, 3, features=(4, 8), rfb_channels=4)


def resume(path, model: torch.nn.Module) -> Engine:
    engine = Engine(lambda engine, batch: None)
    ResumeCheckpointLoader(load_path=str(path), load_dict={"model": model}).attach(engine)
    engine.run([0], max_epochs=1)
    return engine


def test_a_wrapped_network_resumes_from_the_weights_of_the_module_it_wraps(tmp_path):
    saved, path = network(), tmp_path / "checkpoint.pt"
    torch.save({"model": saved.state_dict()}, path)  # as ignite saves a DataParallel/DDP network: its module
    resumed = torch.nn.DataParallel(network())
    resume(path, resumed)
    for name, tensor in saved.state_dict().items():
        torch.testing.assert_close(resumed.module.state_dict()[name], tensor, msg=name)


def test_another_networks_checkpoint_is_named_and_left_as_it_is(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": network().state_dict()}, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=f"checkpoint {path} does not fit the network .* another run"):
        resume(path, BasicUNet(2, 1, 3))
    assert path.read_bytes() == before


def test_the_best_model_is_saved_with_the_settings_it_was_trained_with(tmp_path):
    """``model.json`` beside ``model.pt``, rewritten with each better model; read back by the inference config."""
    size = {"features": [4, 8], "rfb_channels": 4, "spatial_size": 32}
    settings = {"preset": "small", "size": size, "in_channels": 1, "num_classes": 3, "class_names": ["a", "b"]}
    settings["intensity"] = "mri"
    net, scores = network(), iter([0.2, 0.1, 0.4])
    validator = Engine(lambda engine, batch: None)
    validator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(dice=next(scores)))
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path),
        save_dict={"model": net},
        save_key_metric=True,
        key_metric_name="dice",
        key_metric_filename="model.pt",
        key_metric_settings={**settings, "dataset": "decathlon"},
    )
    saver.attach(validator)
    validator.run([0], max_epochs=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pt"]
    assert model_settings(tmp_path / "model.pt") == settings  # the training's dataset is for the reader only
    assert model_settings([tmp_path / "model.pt", tmp_path / "elsewhere.pt"]) == settings  # an ensemble


def test_model_settings_that_cannot_be_used_are_named(tmp_path):
    assert model_settings(tmp_path / "model.pt") == {}  # weights without settings: the configs' defaults
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match=f"{tmp_path / 'model.json'}: cannot be read"):
        model_settings(tmp_path / "model.pt")
    write_model_settings(tmp_path / "a.pt", {"num_classes": 4, "intensity": "mri"})
    write_model_settings(tmp_path / "b.pt", {"num_classes": 4, "intensity": "ct"})
    with pytest.raises(ValueError, match=f"{tmp_path / 'b.json'}: the model settings .* differ from those of"):
        model_settings([tmp_path / "a.pt", tmp_path / "b.pt"])
    write_model_settings(tmp_path / "c.pt", {"num_classes": 4, "intensity": "mri", "size": {"rfb_channels": 8}})
    with pytest.raises(ValueError, match=f"{tmp_path / 'c.json'}: the model settings .* differ from those of"):
        model_settings([tmp_path / "a.pt", tmp_path / "c.pt"])
