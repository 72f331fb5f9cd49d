"""A user's theory on the command line: ``--theory-file FILE`` makes examples/phi6.py's φ⁶ a
theory of ``mcmc``, ``train`` and ``sample --metropolis``, with its parameters as options; its
runs record the file and refuse another; a broken file or theory is one line, exit status 2.
Each command runs in a fresh interpreter, so the registration does not leak into other tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PHI6 = ROOT / "examples" / "phi6.py"


def physdiff(*args, cwd):
    env = dict(os.environ, PHYSDIFF_CACHE=str(Path(cwd) / "cache"), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "physdiff", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_phi6_from_its_file_mcmc_train_and_exact_chain(tmp_path):
    mc = physdiff("mcmc", "phi6", "--theory-file", PHI6, "--L", 4, "--kappa", 0.15, "--g", 0.1, "--n", 1600,
                  "--out", "phi6.npy", "-q", cwd=tmp_path)
    assert mc.returncode == 0, mc.stderr
    info = json.loads((tmp_path / "phi6.json").read_text())
    assert info["params"] == {"model": "phi6", "kappa": 0.15, "g": 0.1} and info["thermalisation"]["agree"]
    x = np.load(tmp_path / "phi6.npy")
    assert x.shape == (1600, 4, 4)
    obs = physdiff("observables", "phi6.npy", "--theory-file", PHI6, "--json", cwd=tmp_path)
    assert obs.returncode == 0, obs.stderr
    assert "--g" in physdiff("mcmc", "--theory-file", PHI6, "--help", cwd=tmp_path).stdout

    tr = physdiff("train", "--theory-file", PHI6, "--dataset", "phi6", "--L", 4, "--kappa", 0.15, "--g", 0.1,
                  "--steps", 200, "--n-train", 800, "--out", "run", "-q", cwd=tmp_path)
    assert tr.returncode == 0, tr.stderr
    record = json.loads((tmp_path / "run" / "theory.json").read_text())
    assert record["name"] == "phi6" and len(record["sha256"]) == 64

    # later commands need the same file: without it, or with another, one line each
    missing = physdiff("sample", "run", "--metropolis", "--n", 50, "--out", "c.npy", cwd=tmp_path)
    assert missing.returncode == 2 and "--theory-file" in missing.stderr and len(missing.stderr.splitlines()) == 1
    other = tmp_path / "other.py"
    other.write_text(PHI6.read_text() + "\n# edited\n")
    changed = physdiff("sample", "run", "--theory-file", other, "--metropolis", "--n", 50, "--out", "c.npy",
                       cwd=tmp_path)
    assert changed.returncode == 2 and "SHA-256" in changed.stderr and not (tmp_path / "c.npy").exists()

    chain = physdiff("sample", "run", "--theory-file", PHI6, "--metropolis", "--n", 200, "--out", "c.npy", "-q",
                     cwd=tmp_path)
    assert chain.returncode == 0, chain.stderr
    side = json.loads((tmp_path / "c.json").read_text())
    assert side["params"]["model"] == "phi6" and 0.3 < side["acceptance"] <= 1
    assert np.isfinite(side["log_z"]["value"]) and side["log_z"]["error"] > 0


BROKEN = {
    "nan": ("return (phi**2).sum((-2, -1)) * float('nan')", "not finite"),
    "shape": ("return phi**2", "must return one number per configuration"),
    "raises": ("raise ValueError('no action here')", "its action raised ValueError: no action here"),
    "missing": ("return (self.h * phi**2).sum((-2, -1))", "its action raised AttributeError"),
}


def broken(folder: Path, name: str, body: str) -> Path:
    text = PHI6.read_text().replace("return (-2 * self.kappa * hop + phi**2 + self.g * phi**6).sum((-2, -1))", body)
    path = folder / f"{name}.py"
    path.write_text(text)
    return path


def test_a_broken_theory_file_is_one_line_and_exit_2(tmp_path):
    """Every broken file in one interpreter: a file that fails leaves nothing registered, so the
    next file's φ⁶ is not taken for a redefinition."""
    cases = {name: (broken(tmp_path, name, body), want) for name, (body, want) in BROKEN.items()}
    (tmp_path / "imports.py").write_text("import physdiff_no_such_module\n")
    (tmp_path / "empty.py").write_text("x = 1\n")
    cases |= {"imports": (tmp_path / "imports.py", "failed to load: ModuleNotFoundError"),
              "empty": (tmp_path / "empty.py", "registers no theory"),
              "absent": (tmp_path / "absent.py", "does not exist")}
    script = (
        "import sys, json\nfrom physdiff.cli import main\nout = {}\n"
        f"for name, path in {json.dumps({k: str(v[0]) for k, v in cases.items()})}.items():\n"
        "    out[name] = main(['mcmc', 'phi6', '--theory-file', path, '--L', '4', '--n', '160', '--out',\n"
        "                      name + '.npy', '-q'])\n"
        "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PHYSDIFF_CACHE=str(tmp_path / "cache")))
    codes = json.loads(proc.stdout.splitlines()[-1])
    lines = proc.stderr.splitlines()
    assert codes == dict.fromkeys(cases, 2) and len(lines) == len(cases), proc.stderr
    for (name, (path, want)), line in zip(cases.items(), lines, strict=True):
        assert line.startswith("physdiff: error: ") and want in line and path.name in line, (name, line)
    assert not list(tmp_path.glob("*.npy"))


def test_the_check_catches_a_theory_registered_from_python():
    """make_theory tries a theory that is not physdiff's own before any work (here one whose
    action has the wrong shape), with the same one-line error."""
    code = (PHI6.read_text().replace("return (-2 * self.kappa * hop + phi**2 + self.g * phi**6).sum((-2, -1))",
                                     "return phi") + "\nfrom physdiff.lattice import make_theory\n"
            "from physdiff import PhysdiffError\ntry:\n    make_theory('phi6', 4)\nexcept PhysdiffError as e:\n"
            "    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "theory 'phi6': its action returned (3, 4, 4)" in proc.stdout, proc.stderr
