"""List mutmut's surviving mutants, each with its one-line change and a category.

    .venv/bin/python benchmarks/mutmut_survivors.py > benchmarks/mutmut_survivors.md   # after `make mutation`

Categories are assigned by the shape of the change (a reviewer's first sort, not a proof):
message (only the text of an error or warning changes), dtype/device (an explicit dtype or device
argument dropped or set to None: the same result for the dtypes and the CPU the tests use), memory
(retain_graph), boundary (< against <=, where the operands never meet on the data), other (read it).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

MUTMUT = [sys.executable, "-m", "mutmut"]


def survivors() -> list[str]:
    out = subprocess.run([*MUTMUT, "results"], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[0].strip() for line in out.splitlines() if line.strip().endswith("survived")]


def change(name: str) -> tuple[str, str]:
    diff = subprocess.run([*MUTMUT, "show", name], capture_output=True, text=True).stdout
    old = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    new = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return (old[0] if old else ""), (new[0] if new else "")


def category(old: str, new: str) -> str:
    if re.search(r"\b(raise|warn|warnings\.warn|Error\()", old) or "XX" in new or re.search(r"f?\"[^\"]*\{", old):
        return "message"
    if re.search(r"(dtype|device)=None", new) or (("dtype=" in old or "device=" in old) and len(new) < len(old)):
        return "dtype/device"
    if "retain_graph" in old:
        return "memory"
    if re.sub(r"<=|>=", lambda m: m.group(0)[0], new) == old:
        return "boundary"
    return "other"


def main() -> None:
    rows = []
    for name in survivors():
        old, new = change(name)
        rows.append((name.split("__mutmut_")[0].replace("x_", "", 1), name, category(old, new), old, new))
    counts = Counter(r[2] for r in rows)
    print(f"# Surviving mutants ({len(rows)}): " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    print()
    print("| function | mutant | category | original | mutant |")
    print("| --- | --- | --- | --- | --- |")
    for func, name, cat, old, new in sorted(rows, key=lambda r: (r[2] != "other", r[0])):
        esc = [s.replace("|", "\\|")[:110] for s in (old, new)]
        print(f"| {func} | {name.split('__mutmut_')[1]} | {cat} | `{esc[0]}` | `{esc[1]}` |")


if __name__ == "__main__":
    main()
