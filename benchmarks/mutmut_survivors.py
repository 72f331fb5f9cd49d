"""List mutmut's surviving mutants, each with its one-line change and a category.

    .venv/bin/python benchmarks/mutmut_survivors.py > benchmarks/mutmut_survivors.md   # after `make mutation`

Categories are assigned by the shape of the change (a reviewer's first sort, not a proof):
message (only the text of an error or warning changes), dtype/device (an explicit dtype or device
argument dropped or set to None: the same result for the dtypes and the CPU the tests use), memory
(retain_graph), boundary (< against <=, where the operands never meet on the data), other (read it).
"""

from __future__ import annotations

import ast
import difflib
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

MUTMUT = [sys.executable, "-m", "mutmut"]


def survivors() -> list[str]:
    out = subprocess.run([*MUTMUT, "results"], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[0].strip() for line in out.splitlines() if line.strip().endswith("survived")]


_CACHE: dict[str, dict[str, list[str]]] = {}


def _functions(module: str) -> dict[str, list[str]]:
    """Source lines of every function in mutmut's copy of ``module`` (originals and mutants)."""
    if module not in _CACHE:
        src = Path("mutants/src", *module.split(".")).with_suffix(".py").read_text()
        lines = src.splitlines()
        _CACHE[module] = {node.name: lines[node.lineno - 1:node.end_lineno] for node in ast.walk(ast.parse(src))
                          if isinstance(node, ast.FunctionDef)}
    return _CACHE[module]


def change(name: str) -> tuple[str, str]:
    """The first changed line of mutant ``name`` against the original (mutmut show, without a
    process per mutant)."""
    module, func = name.rsplit(".", 1)
    funcs = _functions(module)
    orig, mutant = funcs[func.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"], funcs[func]
    diff = list(difflib.unified_diff(orig[1:], mutant[1:], lineterm="", n=0))
    if not diff:  # the change is in the signature line
        diff = list(difflib.unified_diff(orig[:1], mutant[:1], lineterm="", n=0))
    old = [ln[1:].strip() for ln in diff if ln.startswith("-") and not ln.startswith("---")]
    new = [ln[1:].strip() for ln in diff if ln.startswith("+") and not ln.startswith("+++")]
    return (old[0] if old else ""), (new[0] if new else "")


# Survivors read by hand: (regex on the mutant's name, regex on its changed line, what was found:
# why the change cannot alter a result, or by which test it is killed outside mutmut, or NOT KILLED).
# Every survivor of category "other" must match one, or it is printed as UNREAD.
REASONS = [
    (r"q_step_sample", r"- sched", "−√β ε for +√β ε: the same law, ε is symmetric"),
    (r"ode\.x_integrate", r"\[\+1\]", "odeint is given two times: index +1 is index −1"),
    (r"ode\.x_integrate", r"randint\(2,", "randint(2, …) is randint(0, 2, …)"),
    (r"hutchinson_divergence", r"grad / v", "grad/v = grad·v for Rademacher v = ±1"),
    (r"sigmoid_betas", r"2\.0 / \(1\.0|exp\(\+z\)|\* \(v_end - v_start\)|\(v_end \+ v_start\)",
     "β = 1 − ᾱ_t/ᾱ_{t−1} depends on ratios only: σ → 2σ, σ → 1 − σ and a constant factor cancel"),
    (r"sigmoid_betas", r"np\.clip\(alpha_bar", "ᾱ(τ) of the formula lies in [0, 1] on τ ∈ [0, 1]: no clip acts"),
    (r"cosine_betas", r"f \* f\[0\]|f / f\[1\]", "β depends on ratios ᾱ_t/ᾱ_{t−1}: the normalisation cancels"),
    (r"timestep_subsequence", r"np\.array\(\[T \+ 1\]\)",
     "K = 1: the pull-down branch sets the one index to T − 1 anyway"),
    (r"timestep_subsequence", r"taus\[-1\] >= T - 1|taus\[-1\] > T - 2",
     "at τ_K = T − 1 the pull-down changes nothing (the indices are already increasing)"),
    (r"timestep_subsequence", r"range\(K - 2, \+1, -1\)",
     "τ_1 = 0 for every spacing that can overflow (logsnr): the pull-down never moves it"),
    (r"timestep_subsequence|alpha_bar_at|cosine_betas|sigmoid_betas", r"astype\(None\)|dtype=None|arange\(.*, \)",
     "float indices or float64 by default: rounded and converted by int() at the end / the same values"),
    (r"_respaced_loop", r"and False", "respace(sched, 0..T−1) is sched up to round-off"),
    (r"time_index", r"clamp\(None, len|clamp\(1, None\)|clamp\(1, \)|clamp\(1, len\(table\) \+ 1\)",
     "u is clamped to the table first, so searchsorted stays in [0, T−1]; at hi = 0 the wrap-around gives "
     "frac = 1 and t = 0 all the same"),
    (r"get_sampler", r"n=2\)|SAMPLERS\), \)", "only the closest match is shown"),
    (r"respace", r"Schedule\(None,", "the name is only shown"),
    (r"covariance_error|frechet_distance", r"rowvar=None|reshape\(None\)",
     "rowvar=None is falsy like False; np.cov's (D, D) already has the shape"),
    (r"_kth_neighbour_radius", r"1, \)\.values", "kthvalue's default dim −1 is dim 1 of a square matrix"),
    (r"_covered|nearest|_mean_pairwise_distance", r"chunk: int = 2049",
     "the chunk size changes the batching, not the result"),
    (r"randn_like", r"generator\.device|\.to\(None\)|generator=None|dtype=None|randn\(None|randn\(generator",
     "the branch for a generator on another device: never taken on the CPU"),
    (r"energy_distance", r", None\)", "None is falsy like False"),
    (r"far_outliers", r"-2\)", "NumPy reads any negative size as the one unknown dimension"),
    (r"Scheduleǁ__post_init__", r"\(len\(b\) > 1\) or True|len\(b\) >= 1",
     "killed by the T = 1 check of test_schedule_tables_are_float64_and_the_clipped_log_variance_repeats_the_second "
     "(added after the last mutmut pass; checked by hand)"),
    (r"sliced_wasserstein", r"keepdim|dim=0, \)",
     "theta.norm(dim=0) of shape (P,) broadcasts over (D, P) the same way"),
    (r"sliced_wasserstein", r"n_projections: int = 513|seed: int = 1\)",
     "a default of the Monte Carlo projections: another random set, the same estimator (callers pass both)"),
    (r"IndexedNoise", r"block \+ 1\) // block", "one more block is drawn and cut away"),
    (r"compare", r"finite\.any\(\)\) or True|\+math\.inf",
     "NOT KILLED: only reached when no sample has finite density; no bundled toy has zero-density regions"),
    (r"make_schedule", r'name: str = "(XXlinearXX|LINEAR)"|T: int = 1001|T <= 1:',
     "killed by test_make_schedule_defaults / the T = 1 check (added after the last mutmut pass)"),
    (r"timestep_subsequence", r'spacing: str = "(UNIFORM|XXuniformXX)"',
     "killed when run directly (test_default_spacing_is_uniform_and_respaced_schedules_are_named fails on it, "
     "checked by hand); mutmut's coverage map did not route that test here"),
    (r"Scheduleǁto", r"Schedule\(", "the branch for another device: `.to` of the same device returns "
     "self (test_schedule_to_the_same_device_is_the_same_object)"),
    (r"warn_if_signal_left", r"stacklevel|^\)$", "the stacklevel, changed or dropped: checked by "
     "test_signal_warning_points_at_the_caller outside mutmut (its trampoline adds stack frames)"),
]


def reason(name: str, new: str) -> str:
    for name_re, line_re, why in REASONS:
        if re.search(name_re, name) and re.search(line_re, new):
            return why
    return "UNREAD"


WHY = {"message": "only the text of an error or warning changes",
       "dtype/device": "an explicit dtype or device dropped: the same values for the float64/float32 tensors "
                       "and the CPU of the tests (a GPU run is not part of mutation testing)",
       "memory": "retain_graph kept one step longer: the same gradients, more memory",
       "boundary": "< for <= where the operands are never equal on real-valued data"}


def _strict(line: str) -> str:
    return re.sub(r"<=|>=", lambda m: m.group(0)[0], line)


def category(old: str, new: str) -> str:
    if re.search(r"\b(raise|warn|warnings\.warn|Error\()", old) or "XX" in new or re.search(r"f?\"[^\"]*\{", old):
        return "message"
    if re.search(r"(dtype|device)=None|\.to\(None\)|device = None|device and ", new) \
            or (("dtype=" in old or "device=" in old) and len(new) < len(old)):
        return "dtype/device"
    if "retain_graph" in old:
        return "memory"
    if _strict(new) == _strict(old) and new != old:
        return "boundary"
    return "other"


def main() -> None:
    rows = []
    for name in survivors():
        old, new = change(name)
        cat = category(old, new)
        why = reason(name, new)
        why = WHY[cat] if why == "UNREAD" and cat != "other" else why
        rows.append((name.split("__mutmut_")[0].replace("x_", "", 1), name, cat, why, old, new))
    counts = Counter(r[2] for r in rows)
    unread = sum(r[3] == "UNREAD" for r in rows)
    print(f"# Surviving mutants ({len(rows)}): " + ", ".join(f"{k} {v}" for k, v in counts.most_common())
          + f"; unread: {unread}")
    print()
    print("| function | mutant | category | why it changes nothing | original | mutant |")
    print("| --- | --- | --- | --- | --- | --- |")
    for func, name, cat, why, old, new in sorted(rows, key=lambda r: (r[3] != "UNREAD", r[2] != "other", r[0])):
        esc = [s.replace("|", "\\|")[:110] for s in (old, new)]
        print(f"| {func} | {name.split('__mutmut_')[1]} | {cat} | {why} | `{esc[0]}` | `{esc[1]}` |")


if __name__ == "__main__":
    main()
