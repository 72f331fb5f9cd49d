"""The README's code blocks that promise to run do: the user-defined theory ("Your own theory")
runs in a fresh interpreter (its registration must not leak into other tests) and checks
itself (thermalisation, exact log q, Metropolis acceptance)."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def test_readme_block_is_self_contained():
    code = readme_block("### Your own theory")
    assert "register_theory" in code and "def action" in code
    assert "sample_exact" in code and "log_prob=True" in code and "run_mcmc" in code and "train(" in code


def test_users_own_theory_runs(tmp_path):
    code = readme_block("### Your own theory")
    env = dict(os.environ, PHYSDIFF_CACHE=str(tmp_path / "cache"), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exact chain: chi2" in proc.stdout and "acceptance" in proc.stdout


def test_lattice_from_python_runs(tmp_path):
    """The "Lattice from Python" block: Monte Carlo, observables, .h5 and pyerrors files, a short
    training made exact, log Z, Ising against the exact energy; tiny sizes (about 15 s)."""
    code = readme_block("### Lattice from Python")
    env = dict(os.environ, PHYSDIFF_CACHE=str(tmp_path / "cache"), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "log Z = " in proc.stdout and "Ising L = 8" in proc.stdout
    assert (tmp_path / "phi4.h5").is_file() and (tmp_path / "phi4.json.gz").is_file()
