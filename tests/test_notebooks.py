"""Every example notebook runs top to bottom in a real Jupyter kernel, in its fast mode
(PHYSDIFF_FAST=1): a notebook that breaks fails the suite. The notebooks assert their own
checks (closed form, exact denoiser, Metropolis exactness), so a wrong result fails too."""

import os
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

NOTEBOOKS = sorted(EXAMPLES.glob("[0-9][0-9]_*.py"))


def test_every_notebook_is_collected():
    assert len(NOTEBOOKS) == 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode(path, monkeypatch):
    from run_notebooks import execute

    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("PHYSDIFF_FAST", "1")  # restored after the test
    nb = execute(path, fast=True)
    assert os.environ["PHYSDIFF_FAST"] == "1"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code)
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the notebook shows no figure"
