"""Resuming a run: its own checkpoint loads (also into a network wrapped for data parallelism, as torchrun's is),
another network's stops the run before anything is written."""

import pytest
import torch
from ignite.engine import Engine
from monai.networks.nets import BasicUNet

from mgrad.handlers import ResumeCheckpointLoader
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
