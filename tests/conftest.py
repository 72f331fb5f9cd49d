import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def gaussian_2d():
    """A correlated 2D Gaussian N(m, C) as a one-component mixture."""
    from physdiff.analytic import GaussianMixture

    mean = np.array([1.0, -0.5])
    cov = np.array([[1.0, 0.6], [0.6, 0.5]])
    return GaussianMixture([mean], [cov])


def k_sigma(estimate, truth, std_error, k=4.0):
    """|estimate - truth| <= k standard errors, elementwise."""
    estimate, truth, std_error = map(np.asarray, (estimate, truth, std_error))
    return np.all(np.abs(estimate - truth) <= k * std_error)
