"""The user guide's code blocks that promise to run do (docs/guide/lattice.md, "Lattice from
Python" and "Your own theory"), each in a fresh interpreter (a user-defined theory's registration
must not leak into other tests), and their numbers are right: each block ends by printing one JSON
line, and the test checks the values in it — the Metropolis acceptance, χ₂ of the chain against
the Monte Carlo within k combined errors, log Z finite with a small error, the Ising energy against
its exact value — not the words printed beside them."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "lattice.md"
K = 4  # combined standard errors allowed between two estimates of the same number


def guide_block(heading: str) -> str:
    """The first python block after the heading line ``heading`` of the lattice guide."""
    text = GUIDE.read_text(encoding="utf-8")
    start = re.search(rf"^{re.escape(heading)}$", text, re.M)
    assert start, f"no heading {heading!r} in {GUIDE}"
    match = re.search(r"```python\n(.*?)```", text[start.end():], re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def run_block(code: str, cwd: Path) -> dict:
    """Run ``code`` in a fresh interpreter (warnings as errors) in ``cwd``; the JSON of its last line."""
    env = dict(os.environ, PHYSDIFF_CACHE=str(cwd / "cache"), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, "the block printed nothing"
    return json.loads(lines[-1])


def assert_agree(a, b, what: str):
    """Two estimates [value, error] of one number agree within K combined errors."""
    (va, ea), (vb, eb) = a, b
    assert ea > 0 and eb > 0, f"{what}: errors {ea}, {eb} must be positive"
    z = (va - vb) / math.hypot(ea, eb)
    assert abs(z) < K, f"{what}: {va:.4g} ± {ea:.2g} against {vb:.4g} ± {eb:.2g} (z = {z:+.1f})"


def assert_chain(result: dict):
    """What every exact-sampler block reports: a chain that moves, weights that are usable, χ₂ of
    the chain within errors of the Monte Carlo, log Z finite with a small error."""
    assert 0.1 < result["acceptance"] <= 1.0, result["acceptance"]
    assert 0.0 < result["ess_per_sample"] <= 1.0, result["ess_per_sample"]
    assert_agree(result["chi2_chain"], result["chi2_mc"], "χ₂ of the chain against the Monte Carlo")
    log_z, error = result["log_z"]
    assert math.isfinite(log_z) and 0.0 < error < 0.5, result["log_z"]


def test_guide_blocks_are_self_contained():
    code = guide_block("## Your own theory")
    assert "register_theory" in code and "def action" in code
    assert "sample_exact" in code and "log_prob=True" in code and "run_mcmc" in code and "train(" in code
    assert "json.dumps" in guide_block("## Lattice from Python")


def test_users_own_theory_runs(tmp_path):
    """The "Your own theory" block: a φ⁶ theory registered by the user, its Monte Carlo, a short
    training, the exact sampler (about a minute on 2 cores)."""
    result = run_block(guide_block("## Your own theory"), tmp_path)
    assert_chain(result)


def test_lattice_from_python_runs(tmp_path):
    """The "Lattice from Python" block: Monte Carlo, observables, .h5 and pyerrors files, a short
    training made exact, log Z, Ising against the exact energy; tiny sizes (about 15 s)."""
    result = run_block(guide_block("## Lattice from Python"), tmp_path)
    assert_chain(result)
    assert math.isfinite(result["log_z_refined"]) and abs(result["log_z_refined"] - result["log_z"][0]) < 1.0
    value, error = result["ising_energy"]
    assert error > 0 and abs(value - result["ising_energy_exact"]) < K * error, result
    # Kaufman's log Z at L = 8, β = 0.44 (benchmarks/lattice.json, log_z_exact: 60.076307527215405)
    assert abs(result["ising_log_z_exact"] - 60.076307527215405) < 1e-9
    assert (tmp_path / "phi4.h5").is_file() and (tmp_path / "phi4.json.gz").is_file()
