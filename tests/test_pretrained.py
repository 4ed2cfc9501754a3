"""Fine-tuning from a checkpoint of another label set or channel count."""

import logging

import pytest
import torch
from ignite.engine import Engine

from mgrad.networks import MGRADUNet
from mgrad.pretrained import PretrainedLoader, load_pretrained

TINY = {"features": (8, 16, 32, 64, 128), "rfb_channels": 8}


def test_nine_class_checkpoint_to_four_classes(tmp_path, caplog):
    torch.manual_seed(0)
    synapse = MGRADUNet(2, 1, 9, **TINY)
    path = tmp_path / "model.pt"
    torch.save({"model": synapse.state_dict()}, path)
    acdc = MGRADUNet(2, 1, 4, **TINY)
    fresh = {k: v.clone() for k, v in acdc.state_dict().items()}
    loader = PretrainedLoader(str(path), acdc)
    engine = Engine(lambda e, b: None)
    loader.attach(engine)
    with caplog.at_level(logging.INFO, logger="mgrad.pretrained"):
        engine.run([0], max_epochs=1)
    report = loader.report
    theirs, ours = synapse.state_dict(), acdc.state_dict()
    assert report["left_out"] and report["loaded"]
    for name in report["left_out"]:  # the class heads: 9 outputs there, 4 here; kept as initialised
        assert theirs[name].shape != ours[name].shape and torch.equal(ours[name], fresh[name])
        assert theirs[name].shape[0] == 9 and ours[name].shape[0] == 4
    for name in report["loaded"]:
        assert torch.equal(ours[name], theirs[name])
    assert set(report["loaded"]) | set(report["left_out"]) == set(ours)
    assert report["left_out"]["msd.pred.conv.weight"] == "checkpoint (9, 8, 1, 1), network (4, 8, 1, 1)"
    assert all("pred" in name or "side" in name for name in report["left_out"])
    assert f"{len(report['left_out'])} initialised afresh" in caplog.text and "msd.pred.conv.weight" in caplog.text
    with torch.no_grad():
        assert acdc.eval()(torch.rand(1, 1, 32, 32)).shape == (1, 4, 32, 32)


def test_other_channel_count_and_bad_files(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(MGRADUNet(2, 1, 4, **TINY).state_dict(), path)  # a bare state dict
    report = load_pretrained(MGRADUNet(2, 3, 4, **TINY), path)
    assert report["left_out"] == {"encoder.0.conv1.conv.weight": "checkpoint (8, 1, 3, 3), network (8, 3, 3, 3)"}
    with pytest.raises(FileNotFoundError, match="nowhere.pt not found"):
        load_pretrained(MGRADUNet(2, 1, 4, **TINY), tmp_path / "nowhere.pt")
    other = tmp_path / "other.pt"
    torch.save({"model": torch.nn.Linear(3, 3).state_dict()}, other)
    with pytest.raises(ValueError, match="has no tensor that fits the network"):
        load_pretrained(MGRADUNet(2, 1, 4, **TINY), other)
