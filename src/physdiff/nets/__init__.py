"""Denoiser networks. Each takes (x_t, t, cond=None) and returns a tensor shaped like x_t."""

import math

from ..errors import PhysdiffError
from .embeddings import FourierFeatures, TimestepEmbedding, sinusoidal_embedding
from .gaussian import SpectralGaussian
from .mlp import ResMLP
from .symmetry import Flattened, OddNetwork
from .unet import UNet

__all__ = ["FourierFeatures", "OddNetwork", "ResMLP", "SpectralGaussian", "TimestepEmbedding", "UNet",
           "build_model", "sinusoidal_embedding"]


def build_model(model_cfg, data_shape: tuple[int, ...], num_classes: int = 0, kind=None, diffusion=None,
                coupling=None):
    """The denoiser a [model] config describes, for samples of shape ``data_shape``:
    ``arch``, ``symmetry`` and ``gaussian`` = auto take the choices of the data's ``kind``
    (``data/kinds.py``; None: mlp, no symmetry, no Gaussian part). ``num_classes`` > 0 adds a
    label embedding (with a "no label" token for guidance). ``diffusion``: the [diffusion]
    config, needed by a Gaussian part (its schedule and parametrisation); its power spectrum
    is set by ``model.fit(training_fields)`` (see :class:`SpectralGaussian`). ``coupling``: the
    ``lattice.conditioning.Conditioning`` of a coupling-conditioned run (the local network takes the
    coupling as ``cond``, the Gaussian part keeps a spectrum per training coupling), else None."""
    net = _network(model_cfg, data_shape, num_classes, kind.arch if kind is not None else "mlp", coupling)
    symmetry = (kind.symmetry if kind is not None else "none") if model_cfg.symmetry == "auto" else model_cfg.symmetry
    net = OddNetwork(net) if symmetry == "odd" else net
    gaussian = (kind.gaussian if kind is not None else "none") if model_cfg.gaussian == "auto" else model_cfg.gaussian
    if gaussian == "none":
        return net
    if diffusion is None:
        raise PhysdiffError("model.gaussian = 'spectrum' needs the diffusion settings (schedule, prediction)")
    from ..schedule import log_sigma_bar, make_schedule

    sched = make_schedule(diffusion.schedule, diffusion.timesteps, warn=False)
    return SpectralGaussian(net, data_shape, log_sigma_bar(sched), diffusion.prediction,
                            grid=None if coupling is None else coupling.grid)


def _network(model_cfg, data_shape, num_classes, default_arch, coupling=None):
    arch = default_arch if model_cfg.arch == "auto" else model_cfg.arch
    if coupling is not None and arch != "local":
        raise PhysdiffError(f"a coupling-conditioned run needs model.arch = local (got {arch!r})")
    if arch == "mlp":
        dim = math.prod(data_shape)
        m = model_cfg.mlp
        mlp = ResMLP(dim, width=m.width, depth=m.depth, time_dim=model_cfg.time_dim,
                     fourier_features=m.fourier_features, fourier_scale=m.fourier_scale, num_classes=num_classes,
                     site_width=m.site_width)
        return mlp if len(data_shape) == 1 else Flattened(mlp, data_shape)
    if len(data_shape) != 3:
        raise PhysdiffError(f"model.arch = {arch!r} needs images or lattice fields (C, H, W), got shape {data_shape}")
    if arch == "local":
        from .local import LocalNet

        if num_classes:
            raise PhysdiffError("model.arch = 'local' takes no class labels")
        loc = model_cfg.local
        if loc.modes and min(data_shape[-2:]) <= 2 * loc.modes:
            raise PhysdiffError(f"model.local.modes = {loc.modes} reads the momenta up to {loc.modes}·2π/L, which "
                                f"alias on fields of {data_shape[-2]}×{data_shape[-1]}; allowed: modes <= "
                                f"{(min(data_shape[-2:]) - 1) // 2} (0 = off)")
        return LocalNet(data_shape[0], channels=loc.channels, depth=loc.depth, time_dim=model_cfg.time_dim,
                        coupling_range=None if coupling is None else (coupling.lo, coupling.hi), modes=loc.modes)
    u = model_cfg.unet
    return UNet(data_shape[0], channels=u.channels, channel_mult=tuple(u.channel_mult), num_res_blocks=u.num_res_blocks,
                attention=u.attention, dropout=u.dropout, padding=u.padding, time_dim=model_cfg.time_dim,
                num_classes=num_classes)
