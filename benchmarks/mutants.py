"""Hand-written mutants of the formulas physdiff is built on: does the suite fail when one is wrong?

    .venv/bin/python benchmarks/mutants.py        # ~10 min on 2 cores; needs a clean git tree

Each mutant is one textual change (a wrong sign, a wrong index t vs t−1, a wrong variance, a dropped
factor or Jacobian) applied to the source in place, followed by the test files that should catch it;
the file is restored afterwards whatever happens. Prints one row per mutant, killed or SURVIVED.
`make mutation` also runs mutmut over the same modules; see benchmarks/README.md.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "physdiff"

# (file, original, mutant, tests, what it breaks)
MUTANTS = [
    ("schedule.py", "alpha_bar[:-1]])", "alpha_bar[1:]])", ["test_schedule.py", "test_diffusion.py"],
     "ᾱ_{t-1} taken at t+1 (index)"),
    ("schedule.py", "post_var = b * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)",
     "post_var = b * (1.0 - alpha_bar) / (1.0 - alpha_bar_prev)", ["test_schedule.py", "test_diffusion.py"],
     "posterior variance β̃ inverted"),
    ("schedule.py", '"posterior_mean_coef_x0", alpha_bar_prev.sqrt() * b',
     '"posterior_mean_coef_x0", alpha_bar.sqrt() * b', ["test_diffusion.py"], "posterior mean: ᾱ_t for ᾱ_{t-1}"),
    ("schedule.py", '"posterior_mean_coef_xt", alphas.sqrt() *', '"posterior_mean_coef_xt", alphas *',
     ["test_diffusion.py"], "posterior mean: α for √α"),
    ("diffusion.py", "sched.at(sched.betas.sqrt(), t, x_prev) * noise", "sched.at(sched.betas, t, x_prev) * noise",
     ["test_diffusion.py"], "forward step variance β² for β"),
    ("diffusion.py", "ab_prev.sqrt() * x0_hat + (1.0 - ab_prev - sigma2)",
     "ab_prev.sqrt() * x0_hat + (1.0 - ab_prev + sigma2)", ["test_fast_samplers.py"],
     "DDIM: wrong sign of σ² in the ε coefficient"),
    ("samplers.py", "math.expm1(-h) * d", "math.expm1(h) * d", ["test_fast_samplers.py"],
     "DPM-Solver++: e^{h} for e^{-h}"),
    ("samplers.py", "d = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * prev_x0",
     "d = (1 + 1 / r) * x0_hat - (1 / r) * prev_x0", ["test_fast_samplers.py"],
     "DPM-Solver++(2M): wrong extrapolation"),
    ("ode.py", "return -(1.0 - ab) * x + (1.0 - ab).sqrt() * self.epsilon(u, x)",
     "return (1.0 - ab) * x + (1.0 - ab).sqrt() * self.epsilon(u, x)", ["test_ode.py"],
     "ODE drift: sign of the linear part"),
    ("ode.py", "return dy, -div.to(y.dtype)", "return dy, div.to(y.dtype)", ["test_ode.py"],
     "change of variables: sign of the divergence"),
    ("ode.py", "return s * x + a * out", "return a * x + s * out", ["test_ode.py"],
     "ODE: ε from v with α and σ swapped"),
    ("likelihood.py", "total = prior + diffusion + decoder_nll - log_det_jacobian",
     "total = prior + diffusion + decoder_nll + log_det_jacobian", ["test_likelihood.py"], "bound: Jacobian sign"),
    ("likelihood.py", '"log_prob": res.log_prob.cpu() + log_det_jacobian', '"log_prob": res.log_prob.cpu()',
     ["test_likelihood.py"], "ODE likelihood: Jacobian dropped"),
    ("metrics.py", "np.linalg.eigvalsh(s1_half @ s2 @ s1_half)",
     "np.linalg.eigvalsh(s1) * np.linalg.eigvalsh(s2)", ["test_images.py"], "Fréchet: Σ√(λ₁λ₂) for Tr√(Σ₁Σ₂)"),
    ("stats.py", "c = gamma[0] + 2 * gamma[1: window + 1].sum()", "c = gamma[0] + gamma[1: window + 1].sum()",
     ["test_stats.py"], "Γ-method: factor 2 of the two-sided sum"),
    ("lattice/action.py", "kinetic = -2.0 * self.kappa *", "kinetic = -1.0 * self.kappa *", ["test_lattice_mc.py"],
     "φ⁴: hopping term without its 2"),
    ("lattice/mc.py", "-np.expm1(-2.0 * beta)", "-np.expm1(-beta)", ["test_lattice_mc.py"],
     "Wolff: bond probability 1 − e^{−β} for 1 − e^{−2β}"),
    ("lattice/exact.py", "gam[0] = 2 * K + math.log(math.tanh(K))", "gam[0] = 2 * K - math.log(math.tanh(K))",
     ["test_lattice_mc.py"], "Kaufman: sign of γ₀"),
    ("lattice/exact_sampler.py", "if u[i] < log_w[i] - log_w[cur]:", "if u[i] < log_w[cur] - log_w[i]:",
     ["test_lattice_diffusion.py"], "Metropolis: inverted acceptance ratio"),
]


def main() -> int:
    if subprocess.run(["git", "diff", "--quiet", "--", "src"], cwd=ROOT).returncode:
        print("src/ has uncommitted changes; commit or stash them first")
        return 2
    survivors = 0
    print("| file | mutant | tests | result | s |")
    print("| --- | --- | --- | --- | --- |")
    for fname, old, new, tests, what in MUTANTS:
        path = SRC / fname
        text = path.read_text(encoding="utf-8")
        if text.count(old) != 1:
            print(f"| {fname} | {what} | – | NOT FOUND (source changed?) | – |")
            survivors += 1
            continue
        t0 = time.perf_counter()
        try:
            path.write_text(text.replace(old, new), encoding="utf-8")
            rc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                 *[f"tests/{t}" for t in tests]], cwd=ROOT, capture_output=True).returncode
        finally:
            path.write_text(text, encoding="utf-8")
        killed = rc != 0
        survivors += not killed
        print(f"| {fname} | {what} | {', '.join(tests)} | {'killed' if killed else 'SURVIVED'} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)
    print(f"{len(MUTANTS) - survivors} of {len(MUTANTS)} killed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
