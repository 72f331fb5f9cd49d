import os

import numpy as np
import pytest
import torch

# 2 threads on the 2-core development machine; `make mutation` sets 1: mutmut forks a child per
# mutant, and a child forked after OpenMP's thread pool started can hang on its first parallel region
torch.set_num_threads(int(os.environ.get("PHYSDIFF_TEST_THREADS", "2")))


@pytest.fixture
def gaussian_2d():
    """A correlated 2D Gaussian N(m, C) as a one-component mixture."""
    from physdiff.analytic import GaussianMixture

    mean = np.array([1.0, -0.5])
    cov = np.array([[1.0, 0.6], [0.6, 0.5]])
    return GaussianMixture([mean], [cov])


def as_prediction(eps_model, sched, prediction):
    """``eps_model`` rewritten to predict x₀ or v at fractional timesteps t (ᾱ(t) as the ODE reads
    it, ``denoiser.Denoiser``): x₀ = (x − √(1−ᾱ) ε)/√ᾱ, v = √ᾱ ε − √(1−ᾱ) x₀ (Salimans & Ho 2022)."""
    from physdiff.denoiser import Denoiser, output_for

    eps_denoiser = Denoiser(lambda x, t, cond=None: eps_model(x, t), sched, "eps")

    def model(x, t, cond=None):
        p = eps_denoiser(x, t.double())
        return output_for(p.x0, p.eps, p.alpha, p.sigma, prediction)

    return model


def k_sigma(estimate, truth, std_error, k=4.0):
    """|estimate - truth| <= k standard errors, elementwise."""
    estimate, truth, std_error = map(np.asarray, (estimate, truth, std_error))
    return np.all(np.abs(estimate - truth) <= k * std_error)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Caches (classifier, lattice training sets) in a folder of the test session, never in ~."""
    old = os.environ.get("PHYSDIFF_CACHE")
    os.environ["PHYSDIFF_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("PHYSDIFF_CACHE", None)
    else:
        os.environ["PHYSDIFF_CACHE"] = old


@pytest.fixture(autouse=True, scope="session")
def _progress_lines_only_when_asked():
    """No progress line in a command's stderr however slow the machine (the CLI prints one every
    30 s in a log); tests of progress set PHYSDIFF_PROGRESS_INTERVAL themselves."""
    old = os.environ.get("PHYSDIFF_PROGRESS_INTERVAL")
    os.environ["PHYSDIFF_PROGRESS_INTERVAL"] = "86400"
    yield
    if old is None:
        os.environ.pop("PHYSDIFF_PROGRESS_INTERVAL", None)
    else:
        os.environ["PHYSDIFF_PROGRESS_INTERVAL"] = old


def one_line_error(capsys, argv):
    """Run the CLI on ``argv``: it must fail with exit status 2 and one line ``physdiff: error: ...``
    on stderr, never a traceback. Returns that line."""
    from physdiff.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("physdiff: error: "), err
    return err


# a lattice run trained in a few seconds: the hostile-input tests' target (L = 4, φ⁴ defaults)
TINY_LATTICE = ["--steps", "20", "--width", "8", "--timesteps", "30", "--n-train", "64", "--batch-size", "32",
                "--checkpoint-every", "10", "--device", "cpu", "--no-progress", "--L", "4"]


@pytest.fixture(scope="session")
def tiny_phi4_run(tmp_path_factory):
    """One φ⁴ run of TINY_LATTICE for every module that only reads it (copy it before changing it)."""
    from physdiff.cli import main

    out = tmp_path_factory.mktemp("tiny") / "phi4"
    assert main(["train", "--dataset", "phi4", "--out", str(out), *TINY_LATTICE]) == 0
    return out
