"""Help texts of the command line: each option says what it does in a sentence, with its real
default, and the usage line names each option once."""

import json
import re

import pytest

from physdiff.cli import main


def _help(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # one line: argparse wraps at the terminal width


def test_train_help_gives_every_option_a_sentence(capsys):
    from physdiff.arguments import _train_options

    text = _help(capsys, "train")
    for k, (key, _) in _train_options().items():
        if k == "dataset":
            continue
        flag = "--" + k.replace("_", "-")
        m = re.search(re.escape(key) + r": (.*?) \(default", text)
        assert m, (flag, key)
        doc = m.group(1)
        assert doc != key and len(doc.split()) >= 3, (flag, doc)  # not "train.seed: train.seed"


def test_train_help_width_dataset_and_usage(capsys):
    text = _help(capsys, "train")
    assert "max(128, 2L²)" in text and "lattice" in text.split("--width WIDTH", 2)[2][:200]
    dataset = text.split("--dataset DATASET", 2)[2][:400]
    assert "phi4" in dataset and "ising" in dataset and "spiral" in dataset and "digits" in dataset
    assert "--schedule {linear,cosine,sigmoid}" in text
    assert "SCHEDULE {" not in text and "DEVICE {" not in text and "PREDICTION {" not in text
    assert "(default )" not in text


def test_mcmc_help_and_the_default_kappa(capsys, tmp_path):
    """Without --kappa / --lam, phi4 takes the theory's defaults (written to the JSON), and the
    help says which they are."""
    from physdiff.lattice.action import Phi4

    text = _help(capsys, "mcmc")
    kappa = Phi4.parameters()["kappa"].default
    assert f"--kappa KAPPA phi4: hopping parameter κ (default {kappa} for phi4)" in text
    out = tmp_path / "e.npy"
    assert main(["mcmc", "phi4", "--L", "4", "--n", "32", "--out", str(out)]) == 0
    params = json.loads(out.with_suffix(".json").read_text())["params"]
    assert params["kappa"] == kappa and params["lam"] == Phi4.parameters()["lam"].default


def test_mcmc_missing_L_is_one_line(capsys, tmp_path):
    from conftest import one_line_error

    err = one_line_error(capsys, ["mcmc", "phi4", "--n", "32", "--out", str(tmp_path / "e.npy")])
    assert "--L" in err and "required" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["plot", "observables"])
def test_format_option_in_help(capsys, command):
    text = _help(capsys, command)
    assert "--format {png,pdf,svg}" in text and "png (default)" in text and ".csv" in text
