"""Progressive distillation of a run's network into few-step samplers (Salimans & Ho 2022).

A student network makes in one deterministic DDIM step (η = 0) what its teacher makes in two.
The students live on nested grids of visited indices: the base grid is ``base`` logSNR-uniform
indices b_1 < ... < b_base = T−1 (``schedule.timestep_subsequence``), and the N-step grid is
every (base/N)-th of them, g^N_j = b_{j·base/N}, j = 1..N, so that g^N_j = g^{2N}_{2j} and the
N-step grid's last point is T−1, where x_T is drawn. A sampler on g^N evaluates the network at
g^N_N, ..., g^N_1 and after the last evaluation returns x̂₀: N network evaluations, the DDIM
loop of ``samplers.ddim_sample`` on explicit timesteps.

Round N (Salimans & Ho 2022, Algorithm 2): draw x from the training data (network units), a step
j of the N-step grid and ε; z = α x + σ ε at g^N_j. The teacher takes two DDIM steps on the
2N-step grid, z → z' at g^{2N}_{2j−1} → z'' at g^N_{j−1} (z'' = the teacher's x̂₀ at the
last step, j = 1). The student's target x̃ is the x̂₀ with which *one* DDIM step from z lands
on z'':

    z'' = α'' x̃ + σ'' (z − α x̃)/σ   ⇒   x̃ = (z'' − (σ''/σ) z) / (α'' − (σ''/σ) α)

(α'' = 1, σ'' = 0 at the last step: x̃ = z''). The loss is ‖x̂₀ − x̃‖²/σ² (the v-prediction
error, "SNR+1" weighting of the paper), averaged over the sample's dimensions. The student
starts as a copy of its teacher and becomes the next round's teacher; the first teacher is the
run's network on the base grid (``base`` DDIM steps). Adam with the learning rate annealed
linearly to zero in each round.

The students' networks are those of the run (same architecture and parametrisation); they are
kept, with their grids, in the run's ``distilled.safetensors``. Sampling from them is
``sample --sampler distilled --steps N``. A distilled sampler has no exact density: it is a
learnt map, measured (benchmarks/README.md), not a solver of the run's flow.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import checkpoint as ck
from . import diffusion as dif
from . import seeding
from .errors import PhysdiffError
from .nets import build_model
from .progress import progress_bar
from .samplers import SamplerResult, ddim_sample, register
from .schedule import Schedule, respace, timestep_subsequence

FILE = ck.DISTILLED_FILE
FORMAT = 1
DEFAULT_BASE = 256  # the first teacher: the run's network with DDIM on this many logSNR-uniform steps
DEFAULT_STEPS = (1, 2, 4, 8)  # the students kept
DEFAULT_ITERATIONS = 2000  # optimiser steps per halving round
DEFAULT_LR = 5e-4
MAX_BASE = 4096
MAX_ITERATIONS = 10_000_000
MAX_BATCH = 2**20  # as train.batch_size (config.py)


def distillation_grid(sched: Schedule, base: int, steps: int) -> list[int]:
    """The ascending visited indices of the ``steps``-step grid: every (base/steps)-th of the
    ``base`` logSNR-uniform indices, the last T−1 (see the module docstring); ``steps`` a power
    of two up to ``base``."""
    _check_base(base, sched.T)
    if not _power_of_two(steps) or steps > base:
        raise PhysdiffError(f"a grid of {steps!r} steps is not one of the base {base}'s; allowed: a power of two up "
                            f"to {base}")
    b = timestep_subsequence(sched.T, base, "logsnr", sched)
    stride = base // steps
    return [b[(j + 1) * stride - 1] for j in range(steps)]


def _power_of_two(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1 and n & (n - 1) == 0


def _check_base(base: int, T: int) -> None:
    """PhysdiffError unless ``base`` is a power of two from 2 to min(T, MAX_BASE)."""
    top = 1 << (min(T, MAX_BASE).bit_length() - 1)  # the largest power of two up to T and MAX_BASE
    if not _power_of_two(base) or not 2 <= base <= top:
        raise PhysdiffError(f"base = {base!r} is not allowed; allowed: a power of two from 2 to {top} "
                            f"(the run has T = {T} steps)")


def check_levels(base: int, steps, T: int) -> list[int]:
    """``steps`` sorted (descending), each a power of two below ``base``, itself a power of two
    of at most min(T, MAX_BASE); else PhysdiffError."""
    _check_base(base, T)
    steps = list(steps)
    if not steps or any(not _power_of_two(n) or n >= base for n in steps):
        below = [1 << k for k in range(base.bit_length() - 1)]
        shown = ", ".join(map(str, below)) if len(below) <= 5 else f"1, 2, 4, ..., {base // 2}"
        raise PhysdiffError(f"distilled steps {steps!r} are not allowed; allowed: powers of two below the base "
                            f"{base} ({shown})")
    return sorted(set(steps), reverse=True)


def check_settings(iterations, batch_size, lr) -> None:
    """PhysdiffError unless iterations and batch_size are integers >= 1 (at most MAX_ITERATIONS
    and MAX_BATCH) and lr a finite number > 0."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) or not 1 <= iterations <= MAX_ITERATIONS:
        raise PhysdiffError(f"iterations = {iterations!r} is not allowed; allowed: an integer from 1 to "
                            f"{MAX_ITERATIONS}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        raise PhysdiffError(f"batch size {batch_size!r} is not allowed; allowed: an integer from 1 to {MAX_BATCH}")
    if isinstance(lr, bool) or not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise PhysdiffError(f"learning rate {lr!r} is not allowed; allowed: a number > 0")


def refuse_eps():
    raise PhysdiffError("progressive distillation needs a run that predicts v or x0 (diffusion.prediction): "
                        "from ε the one-step x̂₀ = (x − σ ε̂)/α is unstable where α → 0 (Salimans & Ho 2022, "
                        "sec. 4); train with diffusion.prediction = v")


def two_step_target(sub2: Schedule, sub1: Schedule, teacher: Callable, z: torch.Tensor, j: torch.Tensor,
                    grid2: torch.Tensor, prediction: str) -> torch.Tensor:
    """The student's target x̃ at z, the state at step ``j`` (0-based, (B,)) of the N-step grid:
    the teacher's two DDIM steps on the 2N-step grid (respaced schedule ``sub2``, model indices
    ``grid2``), then the x̂₀ of one DDIM step from z to the same point (module docstring). ``sub1``:
    the respaced schedule of the N-step grid; ``teacher(x, t_model)``: the network output."""
    z = z.double()  # the target's division by a small difference of α's, in float64
    x = z
    for k in (2 * j + 1, 2 * j):  # respaced indices of the 2N-step grid: g^N_j = g^{2N}_{2j+1}
        out = teacher(x, grid2[k]).double()
        x0_hat, eps_hat = dif.split_prediction(sub2, out, x, k, prediction)
        x = dif.ddim_step(sub2, x0_hat, eps_hat, k)
    ab, ab_next = sub1.at("alpha_bar", j, z), sub1.at("alpha_bar_prev", j, z)
    ratio = ((1.0 - ab_next) / (1.0 - ab)).sqrt()  # σ''/σ
    return (x - ratio * z) / (ab_next.sqrt() - ratio * ab.sqrt())


def student_loss(sub1: Schedule, out: torch.Tensor, z: torch.Tensor, j: torch.Tensor, target: torch.Tensor,
                 prediction: str) -> torch.Tensor:
    """‖x̂₀ − x̃‖²/σ², averaged over each sample's dimensions, then the batch (the v-prediction
    error: Salimans & Ho 2022, sec. 4, "SNR+1" weighting)."""
    x0_hat, _ = dif.split_prediction(sub1, out, z, j, prediction)
    sigma2 = sub1.at("sqrt_one_minus_alpha_bar", j, z) ** 2
    return (dif.mean_flat((x0_hat - target) ** 2) / sigma2.reshape(-1)).mean()


@dataclass
class Round:
    """One halving round: the student's steps, its loss over the first and last tenth of the
    round's iterations, and the seconds it took."""

    steps: int
    loss_first: float
    loss_last: float
    seconds: float


@dataclass
class Distillation:
    """Students {steps: network} with their grids {steps: ascending indices}, and the record
    of how they were made."""

    students: dict[int, torch.nn.Module]
    grids: dict[int, list[int]]
    base: int
    iterations: int
    batch_size: int
    lr: float
    seed: int
    rounds: list[Round] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.rounds)

    def summary(self, run_path, where) -> str:
        """One line: how the students of the run at ``run_path`` were made and where they went."""
        last = self.rounds[-1]
        return (f"distilled {self.base} DDIM steps of run {str(run_path)!r} in {len(self.rounds)} rounds of "
                f"{self.iterations} iterations ({self.seconds:.0f} s; last round's loss {last.loss_first:.3g} -> "
                f"{last.loss_last:.3g}); {students_phrase(sorted(self.students))} written to {where}; sample with "
                "--sampler distilled --steps N")


def students_phrase(steps: list[int]) -> str:
    """'the student of 1 step', 'students of 1, 2 and 4 steps'."""
    if len(steps) == 1:
        return f"the student of {steps[0]} step{'s' if steps[0] != 1 else ''}"
    return f"students of {', '.join(map(str, steps[:-1]))} and {steps[-1]} steps"


def distill(teacher: torch.nn.Module, sched: Schedule, data: torch.Tensor, prediction: str, *,
            steps=DEFAULT_STEPS, base: int = DEFAULT_BASE, iterations: int = DEFAULT_ITERATIONS,
            batch_size: int = 512, lr: float = DEFAULT_LR, seed: int = 0, progress=None) -> Distillation:
    """Progressive distillation of ``teacher`` (a network ``(x, t, cond) -> output`` of
    parametrisation ``prediction``, v or x0) on ``data`` (network units, (N, *shape)) from the
    ``base``-step DDIM grid down to the fewest of ``steps``, keeping the students of ``steps``.
    ``progress(round_steps, iteration, loss)`` is called every 100 iterations of a round and at its
    last (loss: the mean of the last 100)."""
    if prediction == "eps":
        refuse_eps()
    levels = check_levels(base, steps, sched.T)
    check_settings(iterations, batch_size, lr)
    device = data.device
    sched = sched.to(device)
    gen = seeding.generator(seed, device)
    teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
    result = Distillation({}, {}, base, iterations, batch_size, lr, seed)
    n = base // 2
    while n >= levels[-1]:
        grid2, grid1 = (distillation_grid(sched, base, m) for m in (2 * n, n))
        sub2, sub1 = respace(sched, grid2).to(device), respace(sched, grid1).to(device)
        g2, g1 = (torch.tensor(g, device=device) for g in (grid2, grid1))
        # eval mode: no dropout, so that the seed alone fixes the result; gradients still flow
        student = copy.deepcopy(teacher).eval().requires_grad_(True)
        opt = torch.optim.Adam(student.parameters(), lr=lr)
        losses, t0 = [], time.perf_counter()

        def teach(x, t, net=teacher):
            return net(x.to(data.dtype), t.to(data.dtype), None)

        for it in range(iterations):
            for group in opt.param_groups:
                group["lr"] = lr * (1.0 - it / iterations)  # linear to zero over the round
            rows = torch.randint(0, data.shape[0], (batch_size,), device=device, generator=gen)
            x0 = data[rows]
            j = torch.randint(0, n, (batch_size,), device=device, generator=gen)
            eps = torch.randn(x0.shape, device=device, generator=gen, dtype=x0.dtype)
            z = sub1.at("sqrt_alpha_bar", j, x0) * x0 + sub1.at("sqrt_one_minus_alpha_bar", j, x0) * eps
            with torch.no_grad():
                target = two_step_target(sub2, sub1, teach, z, j, g2, prediction).to(z.dtype)
            out = student(z, g1[j].to(z.dtype), None)
            loss = student_loss(sub1, out, z, j, target, prediction)
            if not torch.isfinite(loss):
                raise PhysdiffError(f"distillation to {n} steps diverged at iteration {it} (loss {float(loss)}); "
                                    f"try a smaller learning rate than {lr:g}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if progress is not None and ((it + 1) % 100 == 0 or it + 1 == iterations):
                progress(n, it + 1, float(np.mean(losses[-100:])))
        tenth = max(1, iterations // 10)
        result.rounds.append(Round(n, float(np.mean(losses[:tenth])), float(np.mean(losses[-tenth:])),
                                   time.perf_counter() - t0))
        teacher = student.eval().requires_grad_(False)
        if n in levels:
            result.students[n] = teacher
            result.grids[n] = grid1
        n //= 2
    return result


# ---------------------------------------------------------------- the run's file


def write_students(run_dir: Path, d: Distillation, context: dict) -> Path:
    """The run's distilled.safetensors: every student's weights (``steps{N}.`` + parameter name)
    and, in the metadata, their grids, how they were made and the teacher they came from
    (``context``: weights, step). Written atomically; replaces an earlier file."""
    from .provenance import version

    tensors = {f"steps{n}.{k}": v for n, net in d.students.items() for k, v in net.state_dict().items()}
    record = {"format": FORMAT, "grids": {str(n): g for n, g in sorted(d.grids.items())}, "base": d.base,
              "iterations": d.iterations, "batch_size": d.batch_size, "lr": d.lr, "seed": d.seed,
              "rounds": [vars(r) for r in d.rounds], "seconds": d.seconds, "teacher": context,
              "physdiff": version()}
    path = Path(run_dir) / FILE
    ck.atomic_save_tensors(path, tensors, {"physdiff_distilled": json.dumps(record)})
    return path


def read_record(run_dir: Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """(record, tensors) of the run's distilled.safetensors, None when there is none; a corrupt
    file or one not written by :func:`write_students` is a PhysdiffError."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return None
    tensors, meta = ck.read_tensors(path, "distilled students file")
    try:
        record = json.loads(meta["physdiff_distilled"])
        if record.get("format") != FORMAT or isinstance(record.get("base"), bool) \
                or not isinstance(record.get("base"), int):
            raise ValueError
        record["grids"] = {int(n): [int(t) for t in g] for n, g in record["grids"].items()}
    except (KeyError, ValueError, TypeError, AttributeError):
        raise PhysdiffError(f"{str(path)!r} is not a physdiff distilled students file (corrupt or edited); delete "
                            "it and distil again with physdiff distill") from None
    return record, tensors


class Students:
    """A run's distilled students, ready to sample: ``pick(steps)`` gives (network, ascending
    visited indices) of the student with ``steps`` evaluations (None: the one with the most)."""

    def __init__(self, nets: dict[int, torch.nn.Module], grids: dict[int, list[int]], where: str):
        self.nets, self.grids, self.where = nets, grids, where

    @property
    def steps(self) -> list[int]:
        return sorted(self.nets)

    def pick(self, steps: int | None) -> tuple[torch.nn.Module, list[int]]:
        if steps is None:
            steps = self.steps[-1]
        if steps not in self.nets:
            raise PhysdiffError(f"{self.where} has no student of {steps} steps; it has "
                                f"{', '.join(map(str, self.steps))} (distill_run with steps {steps} makes one; on the "
                                f"command line physdiff distill RUN --steps {steps})")
        return self.nets[steps], self.grids[steps]


# The sampler of the students, registered here (the sampler registry knows none of its plug-ins);
# it comes after every built-in sampler in the registry's listings.
@register("distilled", "a run's students of progressive distillation (Salimans & Ho 2022), from physdiff distill: "
          "K DDIM steps, each trained to make two of its teacher's", {"steps": "K: one of the run's students "
                                                                      "(default the one with the most)"})
@torch.no_grad()
def distilled_sample(model, sched: Schedule, x_T: torch.Tensor, *, steps: int | None = None, prediction: str = "eps",
                     variance: str = "beta", clip_x0: float | None = None, cond=None, generator=None,
                     callback=None) -> SamplerResult:
    """DDIM (η = 0) with the student of ``steps`` evaluations on its own visited indices
    (``distill.py``). ``model``: the run's students (``distill.Students``, which
    ``LoadedRun.sample(sampler="distilled")`` supplies), not a network. NFE = K."""
    if not isinstance(model, Students):
        raise PhysdiffError("the distilled sampler samples a run's distilled students: LoadedRun.sample(sampler="
                            "'distilled') after LoadedRun.distill (physdiff distill RUN), not a network")
    net, grid = model.pick(steps)
    # no clipping of x̂₀: the students were trained to match unclipped DDIM steps of their teachers
    return ddim_sample(net, sched, x_T, timesteps=grid, prediction=prediction, cond=cond, callback=callback)


# ---------------------------------------------------------------- the jobs that take a run (``LoadedRun``)


def teacher_context(run) -> dict:
    """The weights a distillation starts from: which (ema/model), their training step, and a
    SHA-256 of their values (a run trained again into the same folder has other weights)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(run.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return {"weights": run.weights, "step": run.step, "sha256": h.hexdigest()}

def check_distillable(run) -> None:
    if run.num_classes or run.conditioning is not None:
        what = "class-conditional" if run.num_classes else f"conditioned on {run.conditioning.name}"
        raise PhysdiffError(f"run {str(run.path)!r} is {what}: distill is for an unconditional run (a "
                            "conditional student is not built yet)")
    if run.cfg.diffusion.prediction == "eps":
        refuse_eps()

def distill_run(run, steps=None, *, base: int | None = None, iterations: int | None = None,
            batch_size: int | None = None, lr: float | None = None, seed: int = 0, progress=None):
    """Progressive distillation of this run's network (``distill.py``; Salimans & Ho 2022):
    from the run's network with DDIM on ``base`` logSNR-uniform steps (default 256), halving
    the steps each round with ``iterations`` Adam steps (default 2000) on the run's training
    data, keeping the students of ``steps`` evaluations (default 1, 2, 4, 8). They are written
    to the run's distilled.safetensors (replacing an earlier one) and sampled with
    ``sample(sampler="distilled", steps=N)``. ``batch_size``: default the run's
    train.batch_size. Returns the :class:`distill.Distillation`."""
    from .data import check_fingerprint, load_training

    check_distillable(run)
    steps = DEFAULT_STEPS if steps is None else steps
    base = DEFAULT_BASE if base is None else base
    iterations = DEFAULT_ITERATIONS if iterations is None else iterations
    batch_size = run.cfg.train.batch_size if batch_size is None else batch_size
    lr = DEFAULT_LR if lr is None else lr
    check_levels(base, steps, run.schedule.T)  # before the data are made
    check_settings(iterations, batch_size, lr)
    with ck.OutputLock(run.path / FILE):  # one distill at a time per run
        read_record(run.path)  # a corrupt file is refused before the work
        ts = load_training(run.cfg, held_out=ck.recorded_held_out(run.path, run.cfg))
        if run.cfg.data.file:  # a user's file: the rows the run learnt, not a file changed since
            check_fingerprint(ts.x, ck.learnt_fingerprint(run.path, getattr(run, "learnt", None)), run.cfg.data.file,
                              str(run.path))
        data = run.normalizer.encode(torch.from_numpy(ts.x).double()).to(device=run.device, dtype=torch.float32)
        rounds = (base // min(steps)).bit_length() - 1  # base/2, base/4, ..., the fewest steps
        with progress_bar(progress, rounds * iterations,
                          f"distill (from {base} steps)", "iteration") as bar:
            last = {}

            def report(n, it, loss):
                bar.set_postfix(student=n, loss=f"{loss:.3g}")
                bar.update(it - last.get(n, 0))
                last[n] = it

            result = distill(run.model, run.schedule, data, run.cfg.diffusion.prediction, steps=steps,
                                base=base, iterations=iterations, batch_size=batch_size, lr=lr, seed=seed,
                                progress=report)
        write_students(run.path, result, teacher_context(run))
    run.__dict__.pop("_students", None)  # the run's students are the new ones
    return result

def read_students(run):
    """This run's distilled students (``distill.Students``), loaded from its
    distilled.safetensors; refused, naming the command, when the run has none or they were
    distilled from other weights."""
    if run.__dict__.get("_students") is not None:  # read once per run (and lattice size)
        return run.__dict__["_students"]
    check_distillable(run)
    where = str(run.path / FILE)
    got = read_record(run.path)
    if got is None:
        raise PhysdiffError(f"run {str(run.path)!r} has no distilled students; make them with physdiff distill "
                            f"{str(run.path)!r}")
    record, tensors = got
    if record.get("teacher") != teacher_context(run):
        t = record.get("teacher") or {}
        same = t.get("weights") == run.weights and t.get("step") == run.step
        raise PhysdiffError(f"{where} was distilled from the {t.get('weights')} weights of step {t.get('step')}, "
                            f"not from these ({run.weights}, step {run.step}"
                            + (", other values: the run was trained again" if same else "")
                            + "); distil again with distill_run (physdiff distill; for the other weights, weights= or "
                            "--weights)")
    nets = {}
    for n in record["grids"]:
        net = build_model(run.cfg.model, run.data_shape, run.num_classes, run.kind, run.cfg.diffusion,
                          coupling=run.conditioning)
        ck.load_module_state(net, tensors, f"{where} (student of {n} steps)", prefix=f"steps{n}.")
        if not all(torch.isfinite(v).all() for v in net.state_dict().values() if v.is_floating_point()):
            raise PhysdiffError(f"{where}: the student of {n} steps holds non-finite weights; distil again")
        nets[n] = net.to(run.device).eval().requires_grad_(False)
        if record["grids"][n] != distillation_grid(run.schedule, record["base"], n):
            raise PhysdiffError(f"{where}: the grid of the student of {n} steps is not the one it was distilled "
                                "on (the file was edited); distil again")
    run.__dict__["_students"] = Students(nets, record["grids"], where)
    return run.__dict__["_students"]
