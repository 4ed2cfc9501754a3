"""The published test procedure (``--protocol transunet``) on a real ACDC volume: slice-wise cubic zoom, fp32
argmax, nearest zoom back; and the published metric rules on perfect predictions."""

import h5py
import numpy as np
import pytest
import torch
from monai.transforms import Resized
from scipy.ndimage import zoom

from mgrad import metrics
from mgrad.bundle import merged_config
from mgrad.errors import root_cause
from mgrad.inferers import VolumeSliceInferer
from mgrad.zoom_inferer import ZoomSliceInferer


@pytest.fixture
def acdc_volume(acdc_h5_dir):
    """One real ACDC volume as channel-first ``(1, H, W, D)`` image and ``(H, W, D)`` label (slice axis last)."""
    with h5py.File(acdc_h5_dir / "volumes" / "patient002_frame01.h5", "r") as f:
        image, label = f["image"][()], f["label"][()]
    return np.moveaxis(image, 0, -1)[None].astype(np.float32), np.moveaxis(label, 0, -1).astype(np.int64)


def _network(num_classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, num_classes, 3, padding=1)
    ).eval()


def test_procedure_is_slicewise_cubic_then_nearest(acdc_volume):
    image, _ = acdc_volume
    net = _network()
    out = ZoomSliceInferer((64, 64), num_classes=4, sw_batch_size=3)(torch.from_numpy(image)[None], net)
    assert out.shape == (1, 4, *image.shape[1:]) and out.dtype == torch.float32
    assert torch.equal(out.sum(1), torch.ones_like(out[:, 0]))  # one-hot
    labels = out[0].argmax(0).numpy()

    h, w, depth = image.shape[1:]
    for z in (0, depth // 2, depth - 1):  # the same slice computed directly with scipy
        zoomed = zoom(image[0, :, :, z], (64 / h, 64 / w), order=3)
        with torch.no_grad():
            argmax = net(torch.from_numpy(zoomed)[None, None]).argmax(1)[0].numpy()
        expected = zoom(argmax, (h / 64, w / 64), order=0)
        np.testing.assert_array_equal(labels[:, :, z], expected)
    # a cubic zoom differs from a linear one: the procedure really is order 3
    linear = zoom(image[0, :, :, 0], (64 / h, 64 / w), order=1)
    assert not np.allclose(linear, zoom(image[0, :, :, 0], (64 / h, 64 / w), order=3))


def test_perfect_predictions_score_one(acdc_volume):
    _, label = acdc_volume
    result = metrics.case_metrics(label, label, 4, spacing=(1.5, 1.5, 10.0), protocol="transunet")
    assert [result[c]["dice"] for c in (1, 2, 3)] == [1.0, 1.0, 1.0]
    assert [result[c]["hd95"] for c in (1, 2, 3)] == [0.0, 0.0, 0.0]


def test_oracle_network_through_the_procedure_scores_one(acdc_volume):
    """A network that returns the one-hot of its (integer-valued) input: a label map fed as the image comes back as
    itself when no zoom is needed, and scores Dice 1 under the published rules."""
    _, label = acdc_volume

    def oracle(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(x[:, 0].round().long(), 4).permute(0, 3, 1, 2).float()

    volume = torch.from_numpy(label[None, None].astype(np.float32))
    out = ZoomSliceInferer(label.shape[:2], num_classes=4)(volume, oracle)
    pred = out[0].argmax(0).numpy()
    np.testing.assert_array_equal(pred, label)
    summary = metrics.summarize(
        {"case": metrics.case_metrics(pred, label, 4, protocol="transunet")}, protocol="transunet"
    )
    assert summary["mean_dice"] == 1.0


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="roi_size"):
        ZoomSliceInferer((64,), num_classes=2)
    with pytest.raises(ValueError, match=r"\(B, C, H, W, D\)"):
        ZoomSliceInferer((8, 8), num_classes=2)(torch.zeros(1, 1, 8, 8), _network(2))


@pytest.mark.parametrize(
    "protocol,inferer,resized", [("transunet", ZoomSliceInferer, False), ("default", VolumeSliceInferer, True)]
)
def test_bundle_protocol_picks_the_inferer_and_the_in_plane_resize(protocol, inferer, resized, phantom_dir):
    """One ``protocol`` id (inference.json) serves ``infer`` and ``evaluate``: the published protocol runs on the
    original in-plane size (no Resized step) with the zooming inferer."""
    parser = merged_config(["inference", "evaluate"])
    parser.update({"dataset_dir": str(phantom_dir), "protocol": protocol, "device": "$torch.device('cpu')"})
    chosen = parser.get_parsed_content("evaluator#inferer")
    assert type(chosen) is inferer
    if protocol == "transunet":
        assert chosen.roi_size == (96, 96) and chosen.num_classes == 9
    steps = parser.get_parsed_content("preprocessing").transforms
    assert any(isinstance(t, Resized) for t in steps) == resized
    assert parser.get_parsed_content("report").protocol == protocol
    parser["protocol"] = "nnunet"
    with pytest.raises(RuntimeError) as error:
        parser.get_parsed_content("evaluator#inferer", lazy=False)
    assert "unknown protocol 'nnunet'; choose one of ['default', 'transunet']" in str(root_cause(error.value))
