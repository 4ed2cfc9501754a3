"""Building blocks of MGRAD-UNet, in any number of spatial dimensions.

Each block is assembled from :class:`monai.networks.blocks.Convolution` (conv, then norm, then act), so
``act`` and ``norm`` take MONAI's usual names and tuples.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_act_layer
from torch import Tensor, nn

from mgrad.networks.precision import autocast_enabled

__all__ = [
    "ResidualEncoderStage",
    "ReceptiveFieldBlock",
    "DifferentialDecoder",
    "SideHeads",
    "interp_mode",
    "interpolate",
]

ActNorm = str | tuple | None


def interp_mode(spatial_dims: int) -> str:
    """The linear interpolation mode of ``F.interpolate`` for ``spatial_dims`` (bilinear in 2D)."""
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]


def interpolate(
    x: Tensor,
    size: list[int] | None = None,
    scale_factor: float | None = None,
    mode: str = "bilinear",
    align_corners: bool = False,
) -> Tensor:
    """``F.interpolate`` in the precision of ``x``, under autocast too.

    CUDA autocast computes interpolation in float32 (PyTorch's autocast list), so in a float16 forward every sum and
    absolute difference after an upsampling became float32 and the next convolution cast it back: on an H200 the
    float16 fast path's float32 upsampling alone took 22% of an eval forward (4.4 of 20.2 ms at batch 12; another
    3.8 ms in the float32 sums, differences and absolute values after it). Here the interpolation of a float16 or
    bfloat16 map keeps its dtype (its arithmetic accumulates in float32 either way; only its result is rounded, as
    the convolution before it rounded its own); float32 maps and runs without autocast are ``F.interpolate``'s.
    """
    if not torch.jit.is_scripting():
        if autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return F.interpolate(x, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners)
    return F.interpolate(x, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners)


def conv_block(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: Sequence[int] | int = 3,
    act: ActNorm = "relu",
    norm: ActNorm = "batch",
    dilation: int = 1,
    bias: bool = False,
) -> Convolution:
    """Convolution (same padding), then norm, then act; either may be ``None``."""
    return Convolution(
        spatial_dims,
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        act=act,
        norm=norm,
        dilation=dilation,
        bias=bias,
        conv_only=act is None and norm is None,
    )


class ResidualEncoderStage(nn.Module):
    """One encoder stage: conv3-norm-act, conv3-norm giving ``h``, then ``act(h + norm(conv1(h)))``.

    This is the residual stage of the released model (its 1x1 branch works on ``h``, with a bias).

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: output channels.
        act: activation type and arguments (MONAI style).
        norm: normalisation type and arguments (MONAI style).

    ``forward(x)`` maps ``(B, in_channels, *spatial)`` to ``(B, out_channels, *spatial)``.

    Example::

        >>> ResidualEncoderStage(2, 1, 64, "relu", "batch")(torch.rand(2, 1, 32, 32)).shape   # (2, 64, 32, 32)
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, act: ActNorm, norm: ActNorm) -> None:
        super().__init__()
        self.conv1 = conv_block(spatial_dims, in_channels, out_channels, 3, act=act, norm=norm)
        self.conv2 = conv_block(spatial_dims, out_channels, out_channels, 3, act=None, norm=norm)
        self.residual = conv_block(spatial_dims, out_channels, out_channels, 1, act=None, norm=norm, bias=True)
        self.act = get_act_layer(act) if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(self.conv1(x))
        return self.act(h + self.residual(h))


class ReceptiveFieldBlock(nn.Module):
    """Receptive field block (RFB, as in RFBNet and PraNet) reducing ``in_channels`` to ``out_channels``.

    Four branches: a 1x1 conv, and for k in (3, 5, 7) a 1x1 conv, factorised k-convs along each axis
    (1xk then kx1 in 2D; the last axis first) and a 3-conv with dilation k. The branches are concatenated,
    fused by a 3-conv and added to a 1x1 shortcut, then ``act``.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: output channels (of every branch and of the block).
        act: activation type and arguments (MONAI style).
        norm: normalisation type and arguments (MONAI style).

    ``forward(x)`` maps ``(B, in_channels, *spatial)`` to ``(B, out_channels, *spatial)``.

    Example::

        >>> ReceptiveFieldBlock(2, 256, 64)(torch.rand(2, 256, 28, 28)).shape   # (2, 64, 28, 28)
    """

    kernel_sizes = (3, 5, 7)

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, act: ActNorm = "relu", norm: ActNorm = "batch"
    ) -> None:
        super().__init__()
        branches = [conv_block(spatial_dims, in_channels, out_channels, 1, act=act, norm=norm)]
        for k in self.kernel_sizes:
            layers = [conv_block(spatial_dims, in_channels, out_channels, 1, act=act, norm=norm)]
            for axis in reversed(range(spatial_dims)):
                kernel = [1] * spatial_dims
                kernel[axis] = k
                layers.append(conv_block(spatial_dims, out_channels, out_channels, kernel, act=act, norm=norm))
            layers.append(conv_block(spatial_dims, out_channels, out_channels, 3, act=act, norm=norm, dilation=k))
            branches.append(nn.Sequential(*layers))
        self.branches = nn.ModuleList(branches)
        self.fuse = conv_block(spatial_dims, len(branches) * out_channels, out_channels, 3, act=act, norm=norm)
        self.shortcut = conv_block(spatial_dims, in_channels, out_channels, 1, act=act, norm=norm)
        self.act = get_act_layer(act) if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        outs: list[Tensor] = []
        for branch in self.branches:
            outs.append(branch(x))
        return self.act(self.fuse(torch.cat(outs, dim=1)) + self.shortcut(x))


class DifferentialDecoder(nn.Module):
    """A differential pyramid decoder over ``num_levels`` feature maps of ``channels`` channels each.

    Levels are indexed finest first (0) to coarsest (``num_levels - 1``); each is half the size of the one before.
    The first-order differential process between adjacent levels is ``DP(a, b) = conv(|up2(a) - b|)`` and
    every higher order applies DP to the order below it, a pyramid of ``L-1, L-2, ..., 1`` maps (eq. 1).
    Level ``i`` aggregates every order's map at ``i`` (eq. 2; one convolution where there is more than one);
    a top-down path then refines ``out_i = conv(up2(out_{i+1}) + level_i)`` from ``out_{L-1}`` (the coarsest
    input) down to ``out_0`` (a plain convolution), and a 1x1 convolution of ``out_0`` gives the logits.

    With ``gated=True`` this is the gate-control reverse-attention decoder (GRAD): the stage features ``M`` of
    the first decoder give gates ``w = sigmoid(M)``; the coarsest input becomes ``conv(R + R * w)`` and the
    first-order terms use the reverse attention ``R * (1 - w)`` (eq. 4). As in the released model that produced
    the published numbers, the gated first-order term is ``conv(|up2(a) + R * (1 - w)|)``, a sum, where the
    paper's eq. 1 writes a difference; the higher orders are differences as in the first decoder.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: channels of every input level and of the stage features.
        out_channels: channels of the logits (classes).
        num_levels: number of levels ``L`` (at least 2).
        act: activation type and arguments (MONAI style).
        norm: normalisation type and arguments (MONAI style).
        gated: the gate-control reverse-attention decoder (GRAD) instead of the plain one (MSD).

    ``forward(features, gates=None)`` takes ``L`` maps, level ``i`` of shape ``(B, channels, *spatial / 2**i)``,
    and for ``gated=True`` the first decoder's stage features of the same shapes as ``gates``.

    Returns:
        the logits ``(B, out_channels, *spatial)`` and the stage features ``[out_0, ..., out_{L-1}]``, shaped as the
        inputs.

    Example::

        >>> decoder = DifferentialDecoder(2, channels=8, out_channels=3, num_levels=3)
        >>> logits, stages = decoder([torch.rand(2, 8, 32 // 2**i, 32 // 2**i) for i in range(3)])
        >>> logits.shape, stages[2].shape   # (2, 3, 32, 32), (2, 8, 8, 8)
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        out_channels: int,
        num_levels: int,
        act: ActNorm = "relu",
        norm: ActNorm = "batch",
        gated: bool = False,
    ) -> None:
        super().__init__()
        if num_levels < 2:
            raise ValueError(f"DifferentialDecoder needs at least 2 levels, got {num_levels}.")

        def block() -> Convolution:
            return conv_block(spatial_dims, channels, channels, 3, act=act, norm=norm)

        self.gated = gated
        self.mode = interp_mode(spatial_dims)
        self.gate_top = block() if gated else nn.Identity()
        self.first_order = nn.ModuleList([block() for _ in range(num_levels - 1)])
        self.higher_orders = nn.ModuleList(
            [nn.ModuleList([block() for _ in range(num_levels - order)]) for order in range(2, num_levels)]
        )
        # level i (0 <= i <= L-3) sums L-1-i maps; the level just below the top holds one map and needs no conv
        self.aggregate = nn.ModuleList([block() for _ in range(num_levels - 2)])
        # top-down refinement, coarse to fine: out_{L-2} ... out_1, then a plain conv for out_0
        self.refine = nn.ModuleList([block() for _ in range(num_levels - 2)])
        self.output_conv = conv_block(spatial_dims, channels, channels, 3, act=None, norm=None, bias=True)
        self.pred = conv_block(spatial_dims, channels, out_channels, 1, act=None, norm=None, bias=True)

    def up(self, x: Tensor, ref: Tensor) -> Tensor:
        return interpolate(x, size=list(ref.shape[2:]), mode=self.mode)

    def forward(self, features: list[Tensor], gates: list[Tensor] | None = None):
        num_levels = len(features)
        top = features[num_levels - 1]
        diffs: list[Tensor] = []
        if self.gated:
            if gates is None:
                raise ValueError("The gated decoder needs the first decoder's stage features as gates.")
            weights = [torch.sigmoid(g) for g in gates]
            top = self.gate_top(top + top * weights[num_levels - 1])
            for i, conv in enumerate(self.first_order):
                upper = top if i == num_levels - 2 else features[i + 1]
                # R * (1 - w), written R - R * w: autograd keeps R and w (alive anyway), not a full-size 1 - w
                reverse = features[i] - features[i] * weights[i]
                diffs.append(conv(torch.abs(self.up(upper, features[i]) + reverse)))
        else:
            for i, conv in enumerate(self.first_order):
                diffs.append(conv(torch.abs(self.up(features[i + 1], features[i]) - features[i])))

        # level_sums[i] accumulates every order's map at level i
        level_sums: list[Tensor] = [d for d in diffs]
        prev = diffs
        for convs in self.higher_orders:
            cur: list[Tensor] = []
            for i, conv in enumerate(convs):
                d = conv(torch.abs(self.up(prev[i + 1], prev[i]) - prev[i]))
                cur.append(d)
                level_sums[i] = level_sums[i] + d
            prev = cur

        levels: list[Tensor] = []
        for i, conv in enumerate(self.aggregate):
            levels.append(conv(level_sums[i]))
        levels.append(level_sums[num_levels - 2])

        stages: list[Tensor] = [top]
        out = top
        for j, conv in enumerate(self.refine):
            level = levels[num_levels - 2 - j]
            out = conv(self.up(out, level) + level)
            stages.append(out)
        out = self.output_conv(self.up(out, levels[0]) + levels[0])
        stages.append(out)
        stages.reverse()
        return self.pred(out), stages


class SideHeads(nn.Module):
    """SideConv (eq. 3): a 1x1 convolution to ``out_channels`` on each stage feature, upsampled to full size.

    Level ``i`` is upsampled ``i`` times by 2 (linear interpolation with aligned corners, as released).

    Args:
        spatial_dims: number of spatial dimensions.
        channels: channels of the stage features.
        out_channels: channels of the side logits (classes).
        num_levels: number of stage features.

    ``forward(stages)`` takes ``num_levels`` maps, level ``i`` of shape ``(B, channels, *spatial / 2**i)``.

    Returns:
        the side logits finest first, each ``(B, out_channels, *spatial)``.

    Example::

        >>> heads = SideHeads(2, channels=8, out_channels=3, num_levels=3)
        >>> [s.shape for s in heads([torch.rand(2, 8, 32 // 2**i, 32 // 2**i) for i in range(3)])]  # 3 x (2, 3, 32, 32)
    """

    def __init__(self, spatial_dims: int, channels: int, out_channels: int, num_levels: int) -> None:
        super().__init__()
        self.mode = interp_mode(spatial_dims)
        self.heads = nn.ModuleList(
            [
                conv_block(spatial_dims, channels, out_channels, 1, act=None, norm=None, bias=True)
                for _ in range(num_levels)
            ]
        )

    def forward(self, stages: list[Tensor]) -> list[Tensor]:
        outs: list[Tensor] = []
        for i, head in enumerate(self.heads):
            s = head(stages[i])
            for _ in range(i):
                s = interpolate(s, scale_factor=2.0, mode=self.mode, align_corners=True)
            outs.append(s)
        return outs
