"""Execute the example notebooks (jupytext percent files) in a real kernel.

    python examples/run_notebooks.py [--fast] [--render] [NAME.py ...]

--fast sets PHYSDIFF_FAST=1 (the test suite's budgets); --render writes NAME.ipynb beside each
file with its outputs (what the repository page shows; made with the full budgets).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def execute(path: Path, *, fast: bool, timeout: int | None = None):
    """The executed notebook of a jupytext file; raises on the first failing cell. A cell may run
    ``timeout`` seconds: 900 with the test budgets, 3600 with the full ones (notebook 5 trains its
    L = 8 network in one cell, ~20 min on one core)."""
    timeout = timeout or (900 if fast else 3600)
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    os.environ["PHYSDIFF_FAST"] = "1" if fast else "0"
    with tempfile.TemporaryDirectory() as tmp:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": tmp}}).execute()
    return nb


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="*")
    p.add_argument("--fast", action="store_true")
    p.add_argument("--render", action="store_true")
    args = p.parse_args()
    files = [Path(f) for f in args.files] or sorted(HERE.glob("[0-9][0-9]_*.py"))
    for f in files:
        t0 = time.perf_counter()
        nb = execute(f, fast=args.fast)
        if args.render:
            import nbformat

            nbformat.write(nb, f.with_suffix(".ipynb"))
        print(f"{f.name}: ran in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
