"""Build the documentation into OUT (default docs/api/): the API reference of every physdiff module
from its docstrings (pdoc, math rendered by KaTeX in the browser), the user guide (docs/guide/*.md
and the front page README.md, rendered by markdown2 into OUT/guide/), and a check of every
relative link and image in README.md, docs/guide/*.md and benchmarks/README.md: the file exists
and a ``#anchor`` names a heading of the target. Warnings are errors: a docstring pdoc cannot
parse, a module that does not import, or a broken link fails the build (a broken link with one
line naming the file, its line and the link).

    python -W error docs/build.py [OUT]
"""

from __future__ import annotations

import html
import os
import pkgutil
import re
import sys
import unicodedata
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide"


# ---------------------------------------------------------------- links and anchors


def slug(heading: str) -> str:
    """The anchor of a heading as GitHub writes it: the text without its markdown (links, code
    marks, emphasis), lower case, every character that is not a letter, mark, digit, connector
    (``_``), hyphen or space dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](target) → text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = html.unescape(text).strip().lower()
    keep = [c for c in text if c in "- " or unicodedata.category(c) in ("Nd", "Pc")
            or unicodedata.category(c)[0] in "LM"]
    return "".join(keep).replace(" ", "-")


def _without_code(text: str) -> list[str]:
    """The lines of a markdown text with fenced code blocks blanked and inline code spans removed
    (links inside code are examples, not links); line numbers are kept."""
    out, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence is None and (stripped.startswith("```") or stripped.startswith("~~~")):
            fence = stripped[:3]
            out.append("")
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            out.append("")
            continue
        out.append(re.sub(r"`[^`]*`", "", line))
    return out


def anchors(text: str) -> set[str]:
    """Every anchor of a markdown text: its ATX headings (repeated ones get -1, -2, ... as on
    GitHub) and explicit ``<a id=...>`` / ``name=...``."""
    seen: dict[str, int] = {}
    found = set()
    fence = None
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence is None and stripped[:3] in ("```", "~~~"):
            fence = stripped[:3]
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    return found


LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|(?:href|src)=\"([^\"]+)\"")


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link and image of a markdown text, outside code."""
    return [(i, m.group(1) or m.group(2)) for i, line in enumerate(_without_code(text), 1) for m in LINK.finditer(line)]


def is_external(target: str) -> bool:
    return re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) is not None


def check_links(files: list[Path]) -> list[str]:
    """One line per broken relative link or image of ``files``: the file is missing, or the
    ``#anchor`` names no heading of the markdown file it points into."""
    errors, cache = [], {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        for line, target in links(text):
            if is_external(target):
                continue
            where, _, anchor = target.partition("#")
            dest = (path.parent / where).resolve() if where else path
            name = f"{path.relative_to(ROOT)}:{line}: broken link {target!r}"
            if not dest.exists():
                errors.append(f"{name}: {os.path.relpath(dest, ROOT)} does not exist")
                continue
            if anchor:
                if dest.suffix != ".md":
                    errors.append(f"{name}: an anchor into {dest.name}, which is not markdown, cannot be checked")
                    continue
                if dest not in cache:
                    cache[dest] = anchors(dest.read_text(encoding="utf-8"))
                if anchor not in cache[dest]:
                    errors.append(f"{name}: no heading with the anchor #{anchor} in {os.path.relpath(dest, ROOT)}")
    return errors


# ---------------------------------------------------------------- the guide as HTML

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — physdiff</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; }}
nav {{ border-bottom: 1px solid #ccc; padding-bottom: .5rem; margin-bottom: 1rem; }}
pre, code {{ font-family: ui-monospace, monospace; font-size: .92em; }}
pre {{ background: #f5f5f5; padding: .75rem; overflow-x: auto; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .25rem .5rem; vertical-align: top; }}
img {{ max-width: 100%; }}
</style></head>
<body><nav><a href="index.html">User guide</a> · <a href="readme.html">Front page</a> ·
<a href="../index.html">API reference</a></nav>
{body}
</body></html>
"""


def _html_name(md: Path) -> str:
    return "readme.html" if md == ROOT / "README.md" else md.with_suffix(".html").name


def render(md: Path, out_dir: Path, pages: set[Path]) -> Path:
    """``md`` as OUT/guide/NAME.html: headings carry the anchors the link check uses, links to a
    rendered page point to its HTML, every other relative link or image to the file in the
    checkout (relative to the page)."""
    import markdown2

    text = md.read_text(encoding="utf-8")
    body = markdown2.markdown(text, extras=["fenced-code-blocks", "tables", "code-friendly", "cuddled-lists",
                                            "strike"])
    seen: dict[str, int] = {}

    def heading(m):
        level, inner = m.group(1), m.group(2)
        base = slug(re.sub(r"<[^>]+>", "", inner))
        n = seen.get(base, 0)
        seen[base] = n + 1
        return f'<h{level} id="{base if n == 0 else f"{base}-{n}"}">{inner}</h{level}>'

    body = re.sub(r"<h([1-6])>(.*?)</h\1>", heading, body, flags=re.S)

    def relink(m):
        attr, target = m.group(1), html.unescape(m.group(2))
        if is_external(target) or target.startswith("#"):
            return m.group(0)
        where, hash_, anchor = target.partition("#")
        dest = (md.parent / where).resolve()
        new = (_html_name(dest) if dest in pages else os.path.relpath(dest, out_dir)) + hash_ + anchor
        return f'{attr}="{html.escape(new)}"'

    body = re.sub(r'(href|src)="([^"]*)"', relink, body)
    title = re.search(r"^#\s+(.*)$", text, re.M)
    out = out_dir / _html_name(md)
    out.write_text(PAGE.format(title=html.escape(title.group(1) if title else md.stem), body=body), encoding="utf-8")
    return out


def build_guide(out: Path) -> list[Path]:
    """docs/guide/*.md and README.md rendered into OUT/guide/."""
    folder = out / "guide"
    folder.mkdir(parents=True, exist_ok=True)
    pages = {*sorted(GUIDE.glob("*.md")), ROOT / "README.md"}
    return [render(md, folder, pages) for md in sorted(pages)]


# ---------------------------------------------------------------- the API reference


def modules() -> list[str]:
    """physdiff and every submodule (the command-line entry point ``__main__`` left out)."""
    import physdiff

    subs = [m.name for m in pkgutil.walk_packages(physdiff.__path__, "physdiff.") if not m.name.endswith("__main__")]
    return ["physdiff", *subs]


def build_font_cache() -> None:
    """Build matplotlib's font cache now, outside pdoc: on a first run (an empty MPLCONFIGDIR)
    building it runs ``fc-list``, and pdoc suppresses subprocesses while it imports a module, so
    the first module that imports matplotlib (physdiff.demo) would fail to import."""
    import matplotlib.font_manager  # noqa: F401  (importing it loads or builds the cache)


def build_api(out: Path) -> int:
    import pdoc
    import pdoc.render

    build_font_cache()
    # a package whose __all__ names its submodules is walked by pdoc too: the repeat is harmless
    warnings.filterwarnings("ignore", message="The module specification .* has already been added")
    pdoc.render.configure(docformat="markdown", math=True, footer_text="physdiff API reference")
    pdoc.pdoc(*modules(), output_directory=out)
    return len(list(out.glob("*.html"))) + len(list((out / "physdiff").rglob("*.html")))


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "api").resolve()
    errors = check_links([ROOT / "README.md", *sorted(GUIDE.glob("*.md")), ROOT / "benchmarks" / "README.md"])
    for line in errors:
        print(line, file=sys.stderr)
    if errors:
        print(f"docs: {len(errors)} broken link(s); nothing built", file=sys.stderr)
        return 1
    api_pages = build_api(out)
    guide_pages = build_guide(out)
    print(f"wrote {api_pages} API pages and {len(guide_pages)} guide pages to {out}; links checked")
    return 0 if api_pages > len(modules()) // 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
