"""Test-time augmentation and ensembles (mean softmax), inversion to the original grid one channel at a time, and the
writers of labels and probabilities."""

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor, image_writer
from monai.transforms import Invertd, SaveImaged

from mgrad.ensemble import SoftmaxEnsemble, tta_transforms
from mgrad.transforms import volume_transforms
from mgrad.transforms.invert import InvertLabelsd
from mgrad.writers import AtomicNibabelWriter, AtomicProbabilityWriter


class Shifted(torch.nn.Module):
    """A network that is not flip-invariant: logits depend on the position along each axis."""

    def __init__(self, out_channels: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, out_channels, 3, padding=1)

    def forward(self, x):
        h = torch.linspace(0, 1, x.shape[-2]).view(1, 1, -1, 1)
        w = torch.linspace(0, 2, x.shape[-1]).view(1, 1, 1, -1)
        return self.conv(x) + h * torch.arange(self.conv.out_channels).view(1, -1, 1, 1) + w


def test_tta_modes():
    assert tta_transforms("none") == [((), 0)]
    assert len(tta_transforms("flip")) == 4 and len(set(tta_transforms("rot90"))) == 8
    with pytest.raises(ValueError, match="unknown test-time augmentation 'mirror'"):
        tta_transforms("mirror")


def test_tta_averages_softmax_over_flips():
    torch.manual_seed(0)
    net, x = Shifted().eval(), torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        out = SoftmaxEnsemble(net, tta="flip")(x)
        expected = sum(torch.softmax(net(x.flip(d)).flip(d) if d else net(x), 1) for d in ((), (2,), (3,), (2, 3))) / 4
        torch.testing.assert_close(out.exp(), expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(SoftmaxEnsemble(net)(x), net(x))  # one network, no TTA: its own logits
        # a flip-equivariant input: the flipped-and-unflipped copies all agree with the plain prediction
        rot = SoftmaxEnsemble(net, tta="rot90")(x).exp()
        assert rot.shape == (2, 3, 16, 16)
        torch.testing.assert_close(rot.sum(1), torch.ones(2, 16, 16))
        assert not torch.allclose(rot, expected)


def test_ensemble_is_the_mean_of_its_members():
    torch.manual_seed(0)
    a, b, x = Shifted().eval(), Shifted().eval(), torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        out = SoftmaxEnsemble([a, b])(x).exp()
        torch.testing.assert_close(out, (torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A preprocessed oblique, anisotropic volume and fake logits on its network grid."""
    path = tmp_path_factory.mktemp("vol") / "case.nii.gz"
    affine = np.array([[0, -1.5, 0, 10], [1.2, 0, 0, -5], [0, 0, 4.0, 2], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(size=(40, 36, 7)).astype(np.float32), affine), path)
    pre = volume_transforms("ct", 32, with_label=False)
    data = pre({"image": str(path)})
    logits = torch.randn(4, 32, 32, 7) * 3
    return pre, data, logits, path


def assert_argmax_where_decided(labels: torch.Tensor, outputs: torch.Tensor, margin: float = 1e-4) -> None:
    """``labels`` ``(1, *spatial)`` equal the argmax of ``outputs`` ``(C, *spatial)`` wherever its two largest values
    differ by more than ``margin`` (MONAI's resize and the 2D kernel that undoes it round apart by one float32 step);
    elsewhere they name one of those two."""
    top2 = outputs.topk(2, dim=0)
    decided = (top2.values[0] - top2.values[1]) > margin
    assert decided.float().mean() > 0.99
    assert torch.equal(labels[0][decided].long(), top2.indices[0][decided])
    assert bool(((labels[0].long() == top2.indices[0]) | (labels[0].long() == top2.indices[1])).all())


def test_labels_equal_the_argmax_of_a_whole_inversion(case):
    pre, data, logits, path = case
    reference = Invertd("pred", pre, orig_keys="image", nearest_interp=False)({"pred": MetaTensor(logits), **data})
    out = InvertLabelsd(pre)({"pred": logits.clone(), **data})["pred"]
    assert out.dtype == torch.uint8 and out.shape == (1, 40, 36, 7)
    assert_argmax_where_decided(out.as_tensor(), reference["pred"].as_tensor())
    np.testing.assert_allclose(out.affine.numpy(), nib.load(path).affine, atol=1e-5)
    nearest = InvertLabelsd(pre, argmax_first=True)({"pred": logits.clone(), **data})["pred"]
    assert nearest.shape == (1, 40, 36, 7) and (nearest.as_tensor() == out.as_tensor()).float().mean() > 0.5


def test_probabilities_sum_to_one_and_match_the_labels_on_disk(case, tmp_path):
    pre, data, logits, path = case
    out = InvertLabelsd(pre, prob_key="prob")({"pred": logits.clone(), **data})
    assert out["prob"].dtype == torch.uint16 and out["prob"].shape == (4, 40, 36, 7)
    for key, postfix, dtype, writer in [
        ("pred", "seg", np.uint8, AtomicNibabelWriter),
        ("prob", "prob", np.uint16, AtomicProbabilityWriter),
    ]:
        save = SaveImaged(key, output_dir=tmp_path, output_postfix=postfix, output_dtype=dtype, writer=writer,
                          separate_folder=False, resample=False)  # fmt: skip
        with _records(image_writer.logger) as records:
            save(out)
        assert records == [f"writing: {tmp_path / f'case_{postfix}.nii.gz'}"]  # the file's name, not the temporary one
    seg, prob = nib.load(tmp_path / "case_seg.nii.gz"), nib.load(tmp_path / "case_prob.nii.gz")
    assert prob.shape == (40, 36, 7, 4)  # channels last, as the fourth dimension
    np.testing.assert_allclose(prob.affine, seg.affine, atol=1e-6)
    p = prob.get_fdata()
    assert p.min() >= 0 and p.max() <= 1
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-3)
    np.testing.assert_array_equal(p.argmax(-1), np.asarray(seg.dataobj))
    # the probabilities are the softmax of the whole inversion, to the stored precision
    reference = Invertd("pred", pre, orig_keys="image", nearest_interp=False)({"pred": MetaTensor(logits), **data})
    np.testing.assert_allclose(p, torch.softmax(reference["pred"].as_tensor(), 0).permute(1, 2, 3, 0), atol=2e-5)


def test_slab_anti_aliasing_equals_monai_resize():
    from monai.transforms import Resized

    from mgrad.transforms.antialias import SlabAntiAliasd

    torch.manual_seed(0)
    # volumes of one and two channels, slabs that divide the slices or not; and a 2D image
    for img, size, slab in (
        (MetaTensor(torch.rand(1, 150, 140, 9)), (48, 48, -1), 2),
        (MetaTensor(torch.rand(2, 100, 160, 7)), (48, 48, -1), 8),
        (MetaTensor(torch.rand(1, 150, 140)), (48, 48), 8),
    ):
        expected = Resized("image", size, anti_aliasing=True)({"image": img.clone()})["image"]
        smoothed = SlabAntiAliasd("image", 48, slab=slab)({"image": img.clone()})
        out = Resized("image", size, anti_aliasing=False)(smoothed)["image"]
        assert out.shape == expected.shape
        torch.testing.assert_close(out.as_tensor(), expected.as_tensor())
    small = MetaTensor(torch.rand(1, 40, 40, 3))
    assert SlabAntiAliasd("image", 48)({"image": small})["image"] is small


def test_slab_wise_inversion_equals_the_whole(case):
    pre, data, logits, _ = case
    whole = InvertLabelsd(pre, prob_key="prob", slab=64)({"pred": logits.clone(), **data})
    slabs = InvertLabelsd(pre, prob_key="prob", slab=2)({"pred": logits.clone(), **data})
    assert len(InvertLabelsd(pre, slab=2)._slabs(dict(data), logits)) == 4  # 7 slices
    for key in ("pred", "prob"):
        assert torch.equal(slabs[key].as_tensor(), whole[key].as_tensor())
        np.testing.assert_allclose(slabs[key].affine.numpy(), whole[key].affine.numpy())


def test_the_in_plane_resize_is_undone_slice_by_slice_as_monai_undoes_it(case, monkeypatch):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Resized

    from mgrad.transforms import invert

    pre, data, logits, _ = case
    assert invert._in_plane_size(data["image"], 7) == (36, 40)  # RAS: the bundle's resize, undone in 2D
    fast = InvertLabelsd(pre, prob_key="prob", slab=3)({"pred": logits.clone(), **data})
    with monkeypatch.context() as m:
        m.setattr(invert, "_in_plane_size", lambda orig, depth: None)  # MONAI's Invertd on every channel instead
        monai = InvertLabelsd(pre, prob_key="prob", slab=3)({"pred": logits.clone(), **data})
    for key in ("pred", "prob"):
        assert torch.equal(fast[key].affine, monai[key].affine)
        assert fast[key].applied_operations == monai[key].applied_operations == []
    # the same values to a float32 rounding: probabilities at most one step apart, labels those of their argmax
    assert (fast["prob"].as_tensor().int() - monai["prob"].as_tensor().int()).abs().max() <= 1
    assert_argmax_where_decided(fast["pred"].as_tensor(), monai["prob"].as_tensor().float(), margin=1.5)

    # a resize of the slice axis too is left to MONAI, and still gives the argmax of its whole inversion
    resample = Compose(
        [LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", "RAS"),
         Resized("image", (32, 32, 5), mode="trilinear")]
    )  # fmt: skip
    volume = resample({"image": data["image"].meta["filename_or_obj"]})
    assert invert._in_plane_size(volume["image"], 5) is None
    logits = torch.randn(4, 32, 32, 5)
    reference = Invertd("pred", resample, orig_keys="image", nearest_interp=False)(
        {"pred": MetaTensor(logits), **volume}
    )
    out = InvertLabelsd(resample)({"pred": logits.clone(), **volume})["pred"]
    assert out.shape == (1, 40, 36, 7)
    assert torch.equal(out.as_tensor().long(), reference["pred"].as_tensor().argmax(0, keepdim=True))  # same kernels


def test_a_reorientation_alone_is_undone_without_warnings(case):
    """The TransUNet protocol's preprocessing: no resize, so the reorientation is the only operation to undo."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    _, data, _, path = case
    reorient = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", "RAS")])
    volume = reorient({"image": str(path)})
    logits = torch.randn(4, *volume["image"].shape[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MONAI warns where it is asked to invert no transform
        out = InvertLabelsd(reorient, prob_key="prob")({"pred": logits.clone(), **volume})
    invert = Invertd("pred", reorient, orig_keys="image", nearest_interp=False)
    reference = invert({"pred": MetaTensor(logits), **volume})
    assert out["pred"].shape == (1, 40, 36, 7) and out["prob"].shape == (4, 40, 36, 7)
    assert torch.equal(out["pred"].as_tensor().long(), reference["pred"].as_tensor().argmax(0, keepdim=True))
    for key in ("pred", "prob"):
        np.testing.assert_allclose(out[key].affine.numpy(), nib.load(path).affine, atol=1e-5)
        assert out[key].applied_operations == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the inversion of GPU outputs needs one")
def test_outputs_on_a_gpu_invert_as_on_the_cpu(case):
    pre, data, logits, _ = case
    expected = InvertLabelsd(pre, prob_key="prob", slab=2)({"pred": logits.clone(), **data})
    on_gpu = {**data, "image": data["image"].to("cuda")}
    out = InvertLabelsd(pre, prob_key="prob", slab=2)({"pred": logits.cuda(), **on_gpu})
    assert out["pred"].device.type == out["prob"].device.type == "cpu"  # the whole volume in host memory
    labels = InvertLabelsd(pre)({"pred": logits.cuda(), **on_gpu})["pred"]
    for found in (out["pred"], labels):  # the GPU's resampling rounds differently: ties may fall otherwise
        assert (found.cpu().as_tensor() == expected["pred"].as_tensor()).float().mean() > 0.999
    steps = (out["prob"].as_tensor().int() - expected["prob"].as_tensor().int()).abs()
    assert steps.max() <= 2


@contextmanager
def _records(logger: logging.Logger) -> Iterator[list[str]]:
    """The messages ``logger`` emits within, at INFO level and above."""
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
