"""Denoiser networks. Each takes (x_t, t, cond=None) and returns a tensor shaped like x_t."""

from .embeddings import FourierFeatures, TimestepEmbedding, sinusoidal_embedding
from .mlp import ResMLP

__all__ = ["FourierFeatures", "ResMLP", "TimestepEmbedding", "build_model", "sinusoidal_embedding"]


def build_model(model_cfg, data_shape: tuple[int, ...], num_classes: int = 0):
    """The denoiser a [model] config describes, for samples of shape ``data_shape``."""
    if len(data_shape) != 1:
        raise ValueError(f"the residual MLP needs vector data (D,), got shape {data_shape}")
    return ResMLP(data_shape[0], width=model_cfg.width, depth=model_cfg.depth,
                  time_dim=model_cfg.time_dim, fourier_features=model_cfg.fourier_features,
                  fourier_scale=model_cfg.fourier_scale, num_classes=num_classes)
