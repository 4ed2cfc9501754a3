"""Regional ``torch.compile`` for training: each repeated block of a network compiled on its own, in place.

``torch.compile`` of the whole MGRAD-UNet had not finished warming up after 150 s on an H200 (one large graph per
pass structure, mode and batch shape).
Compiled block by block, each graph is small: the encoder stages, the receptive field blocks, both decoders and the
side heads each become one graph (forward and backward), compiled once for their shapes and reused by every pass.
What the compiler pays for here is fusion: the batch norms, activations, residual sums, the interpolation and the
split-bfloat16 operands of :mod:`mgrad.networks.precision` are elementwise work around the convolutions.

A region's code is shared by the blocks of its kind (five encoder stages, five receptive field blocks) and compiled
once for each shape it meets and each kind of pass (with feedback or without: in a pass without it, float16 and
TF32 keep the low precision, see :mod:`mgrad.networks.precision`), so Dynamo's recompilation limit is raised to
four graphs a region (``torch._dynamo.config.recompile_limit``, where it is lower).

Compiled artefacts are cached on disk (Inductor's FX graph and autotuning caches) in ``cache_dir``, so a second run
of the same network on the same machine warms up from the cache.
"""

import os

import torch._dynamo
from torch import nn

__all__ = ["compile_regions"]


def compile_regions(
    network: nn.Module,
    mode: str | None = None,
    backend: str = "inductor",
    cache_dir: str | None = None,
    fullgraph: bool = False,
) -> nn.Module:
    """Compile ``network``'s regions in place with ``torch.compile``: ``network.regions()`` names them
    (:meth:`mgrad.networks.MGRADUNet.regions`); any other network is compiled whole.

    Parameters, state-dict keys and the module tree are unchanged (``nn.Module.compile`` only swaps each region's
    call), so checkpoints load and save as before, and ``DistributedDataParallel`` wraps the network as usual.

    Args:
        network: the network, on its device.
        mode: ``torch.compile``'s mode: ``None`` (default), ``"reduce-overhead"`` (CUDA graphs), ``"max-autotune"``.
        backend: ``torch.compile``'s backend.
        cache_dir: where Inductor caches compiled graphs (``TORCHINDUCTOR_CACHE_DIR``, unless already set in the
            environment); ``None`` keeps Inductor's default (a folder under the system's temporary directory).
        fullgraph: fail on a graph break instead of splitting the region.

    Returns:
        ``network`` itself.

    Example::

        >>> net = compile_regions(MGRADUNet(2, 1, 4).cuda(), cache_dir="bundle/.cache/inductor")
        >>> out = net(torch.rand(12, 1, 224, 224, device="cuda"))   # the first call compiles each region
    """
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.abspath(cache_dir))
    regions: list[nn.Module] = list(network.regions()) if hasattr(network, "regions") else [network]
    limit = 4 * len(regions)  # shapes x kinds of pass x train and eval, for the regions one code object serves
    name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"  # < 2.7
    setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))
    for region in regions:
        region.compile(mode=mode, backend=backend, fullgraph=fullgraph)
    return network
