"""Build the API reference of every physdiff module from its docstrings (pdoc, math rendered by
KaTeX in the browser) into docs/api/. Warnings are errors: a docstring pdoc cannot parse, or a
module that does not import, fails the build.

    python -W error docs/build.py [OUT]
"""

from __future__ import annotations

import pkgutil
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.render

import physdiff


def modules() -> list[str]:
    """physdiff and every submodule (the command-line entry point ``__main__`` left out)."""
    subs = [m.name for m in pkgutil.walk_packages(physdiff.__path__, "physdiff.") if not m.name.endswith("__main__")]
    return ["physdiff", *subs]


def build_font_cache() -> None:
    """Build matplotlib's font cache now, outside pdoc: on a first run (an empty MPLCONFIGDIR)
    building it runs ``fc-list``, and pdoc suppresses subprocesses while it imports a module, so
    the first module that imports matplotlib (physdiff.demo) would fail to import."""
    import matplotlib.font_manager  # noqa: F401  (importing it loads or builds the cache)


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "api")
    build_font_cache()
    # a package whose __all__ names its submodules is walked by pdoc too: the repeat is harmless
    warnings.filterwarnings("ignore", message="The module specification .* has already been added")
    pdoc.render.configure(docformat="markdown", math=True, footer_text="physdiff API reference")
    pdoc.pdoc(*modules(), output_directory=out)
    pages = sorted(out.rglob("*.html"))
    print(f"wrote {len(pages)} pages to {out}")
    return 0 if len(pages) > len(modules()) // 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
