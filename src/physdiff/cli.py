"""The ``physdiff`` command: data | train | sample | encode | evaluate | plot | demo.

Bad input prints one line ``physdiff: error: ...`` and exits with status 2; outputs are
written atomically, so a failed command leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .errors import PhysdiffError

EPILOGS = {
    "data": "example:\n  physdiff data spiral --n 5000 --seed 0 --out spiral.npy",
    "train": ("examples:\n  physdiff train --dataset spiral --out runs/spiral\n"
              "  physdiff train --data my_points.npy --steps 20000 --out runs/mine\n"
              "  physdiff train --config spiral.toml --out runs/spiral2\n"
              "  physdiff train --resume --out runs/spiral --steps 12000"),
    "sample": ("examples:\n  physdiff sample runs/spiral --n 5000 --seed 1 --out samples.npy --trajectory traj.npy\n"
               "  physdiff sample runs/spiral --sampler ddim --steps 50 --eta 0 --out s.npy\n"
               "  physdiff sample runs/spiral --sampler dpm-solver --steps 20 --out s.npy"),
    "evaluate": ("examples:\n  physdiff evaluate runs/spiral --n 5000 --json\n"
                 "  physdiff evaluate runs/spiral --sampler dpm-solver --steps 20 --nll"),
    "plot": "example:\n  physdiff plot runs/spiral   # writes runs/spiral/{samples,forward,reverse,loss}.png",
    "encode": "example:\n  physdiff encode runs/spiral --data spiral.npy --steps 100 --out latents.npy",
    "demo": "example:\n  physdiff demo --out demo-out   # gaussian, two_gaussians, spiral: figures + metrics.md",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line and status 2 (no usage dump)."""

    def error(self, message):
        raise PhysdiffError(f"{message} (see `{self.prog} --help`)")


def _int_at_least(lo: int):
    """argparse type: an integer >= lo."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {lo}")
        return value

    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


# option name → (config key, type)
TRAIN_OPTIONS = {
    "dataset": ("data.dataset", str), "n_train": ("data.n_train", _positive_int),
    "steps": ("train.steps", _positive_int), "batch_size": ("train.batch_size", _positive_int),
    "lr": ("train.lr", _finite_float), "seed": ("train.seed", _nonneg_int),
    "device": ("train.device", str), "timesteps": ("diffusion.timesteps", _positive_int),
    "schedule": ("diffusion.schedule", str), "prediction": ("diffusion.prediction", str),
    "loss": ("diffusion.loss", str), "variance": ("diffusion.variance", str),
    "width": ("model.width", _positive_int), "depth": ("model.depth", _positive_int),
    "checkpoint_every": ("train.checkpoint_every", _positive_int),
    "folder": ("data.folder", str), "label_dropout": ("train.label_dropout", _finite_float),
    "precision": ("train.precision", str),
}
# flag → (config key, value it sets, help)
TRAIN_FLAGS = {
    "download": ("data.download", True, "mnist / fashion-mnist: fetch missing IDX files"),
    "unconditional": ("data.conditional", False, "ignore the dataset's class labels"),
    "compile": ("train.compile", True, "torch.compile the network (train.compile)"),
}


def _npy_out(path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".npy":
        raise PhysdiffError(f"--out {path!r} must end in .npy")
    if not out.parent.is_dir():
        raise PhysdiffError(f"folder {str(out.parent)!r} for {path!r} does not exist")
    return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    from .checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32))
    atomic_write_bytes(path, buf.getvalue())


def _save_fig(fig, path: Path) -> None:
    from .checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- commands


def cmd_data(args) -> None:
    from .data import resolve_toy

    out = _npy_out(args.out)
    x = resolve_toy(args.name).sample(args.n, args.seed)
    _save_npy(out, x)
    print(f"wrote {args.n} samples of {args.name!r} to {out}")


def cmd_train(args) -> None:
    from .config import Config, load_config
    from .train import train

    if args.resume:
        given = [k for k in TRAIN_OPTIONS if k != "steps" and getattr(args, k) is not None]
        if given or args.config or args.data or any(getattr(args, k) for k in TRAIN_FLAGS):
            extra = ", ".join("--" + k.replace("_", "-") for k in given) or "--config/--data"
            raise PhysdiffError(f"--resume continues a run with its own config.toml; drop {extra} "
                                "(only --steps may be given to extend it)")
        run = train(Config(), args.out, resume=True, steps=args.steps, progress=args.progress)
    else:
        overrides = {key: getattr(args, k) for k, (key, _) in TRAIN_OPTIONS.items() if getattr(args, k) is not None}
        if args.data is not None:
            overrides["data.file"] = args.data
        overrides |= {key: value for k, (key, value, _) in TRAIN_FLAGS.items() if getattr(args, k)}
        cfg = load_config(args.config, overrides)
        run = train(cfg, args.out, overwrite=args.overwrite, progress=args.progress)
    print(f"trained run in {run} (weights: {run / 'ema.safetensors'})")


def _load(args):
    from .run import LoadedRun
    from .train import resolve_device

    return LoadedRun(args.run, weights=args.weights, device=resolve_device(args.device))


def cmd_sample(args) -> None:
    from . import dist
    from .train import resolve_device

    out = _npy_out(args.out)
    traj_out = _npy_out(args.trajectory) if args.trajectory else None
    png_out = Path(args.png) if args.png else None
    if png_out is not None and (png_out.suffix.lower() != ".png" or not png_out.parent.is_dir()):
        raise PhysdiffError(f"--png {args.png!r} must end in .png, in an existing folder")
    # under torchrun each process draws a contiguous share of the indices; rank 0 writes them all
    device, created = dist.init(resolve_device(args.device))
    try:
        _sample_command(args, out, traj_out, png_out, device)
    finally:
        dist.finish(created)


def _sample_command(args, out, traj_out, png_out, device) -> None:
    import torch

    from . import dist
    from .run import LoadedRun

    run = LoadedRun(args.run, weights=args.weights, device=device)
    if png_out is not None and not run.is_image:
        raise PhysdiffError(f"--png needs an image run; this run's data have shape {run.data_shape}")
    sargs = _sampler_args(args, run)
    T = run.schedule.T
    steps = tuple(sorted({round(T * k / (args.snapshots - 1)) for k in range(args.snapshots)}, reverse=True))
    lo, hi = dist.shard(args.n)
    t0 = time.perf_counter()
    x, snaps = run.sample(hi - lo, args.seed, start=lo, batch_size=args.batch_size, classes=args.klass,
                          snapshot_steps=steps if traj_out else (), **sargs)
    kept = [k for k in steps if k in snaps]  # a respaced sampler visits only some steps
    traj = (np.stack([run.normalizer.decode(torch.from_numpy(snaps[k]).double()).numpy() for k in kept], axis=1)
            if traj_out else None)
    x = dist.gather_rows(x)
    traj = dist.gather_rows(traj) if traj_out else None
    elapsed = time.perf_counter() - t0
    if not dist.is_main():
        return
    _save_npy(out, x)
    procs = f", {dist.world_size()} processes" if dist.world_size() > 1 else ""
    msg = (f"wrote {args.n} samples to {out} with {args.sampler} (NFE {run.last_nfe} per batch; "
           f"{elapsed:.1f} s, {args.n / elapsed:.0f} samples/s{procs})")
    if png_out is not None:
        from .data.images import save_png_grid

        save_png_grid(x, png_out)
        msg += f"; PNG grid {png_out}"
    if traj_out:
        traj = np.swapaxes(traj, 0, 1)  # (K, N, ...)
        _save_npy(traj_out, traj)
        msg += f"; trajectory {traj.shape} at t = {kept} to {traj_out}"
    print(msg)


def _check_guidance(args, run) -> None:
    if args.guidance is not None and not run.num_classes:
        raise PhysdiffError("--guidance needs a class-conditional run; this run was trained without labels")


def _sampler_args(args, run) -> dict:
    """Validate --sampler/--steps/--eta/--spacing against the run's T."""
    from .image_eval import default_sampler
    from .samplers import SAMPLERS
    from .schedule import SPACINGS

    if args.sampler is None:
        args.sampler = "ddpm"
        if run.is_image and args.steps is None:
            args.steps = default_sampler(run)["steps"]
    if args.sampler not in SAMPLERS:
        raise PhysdiffError(f"unknown sampler {args.sampler!r}; allowed: {', '.join(SAMPLERS)}")
    _check_guidance(args, run)
    if args.steps is not None and args.steps > run.schedule.T:
        raise PhysdiffError(f"--steps {args.steps} exceeds the run's T = {run.schedule.T}")
    if not 0.0 <= args.eta <= 1.0:
        raise PhysdiffError(f"--eta {args.eta} is out of range; allowed: 0 <= eta <= 1")
    if args.spacing is not None and args.spacing not in SPACINGS:
        raise PhysdiffError(f"unknown spacing {args.spacing!r}; allowed: {', '.join(SPACINGS)}")
    return {"sampler": args.sampler, "steps": args.steps, "eta": args.eta, "spacing": args.spacing,
            "guidance": args.guidance}


def cmd_encode(args) -> None:
    from .data import load_array

    out = _npy_out(args.out)
    run = _load(args)
    x = load_array(args.data, min_rows=1)
    if tuple(x.shape[1:]) != run.data_shape:
        raise PhysdiffError(f"data of shape {x.shape[1:]} do not match the run's data shape {run.data_shape}")
    if args.steps is not None and not 1 <= args.steps <= run.schedule.T:
        raise PhysdiffError(f"--steps must be between 1 and T = {run.schedule.T}")
    z = run.encode(x, steps=args.steps)
    _save_npy(out, z)
    print(f"wrote DDIM latents x_T of {len(x)} points to {out}")


def nll_report(run, n: int, seed: int) -> dict:
    """Variational bound (Ho et al. 2020 eq. 5) and ODE log-likelihood on n fresh test points,
    in data units; KL(p_data ‖ p_model) where the density is exact."""
    import torch

    from .likelihood import nats_to_bits_per_dim, ode_log_likelihood, variational_bound

    refs, _, toy, n = _reference_sets(run, n, seed + 7, repeats=1)
    x = refs[0]
    D = int(np.prod(x.shape[1:]))
    z = run.normalizer.encode(torch.from_numpy(x).double())
    jac = run.normalizer.log_abs_det_jacobian()
    d = run.cfg.diffusion
    vb = variational_bound(run.denoiser, run.schedule, z, prediction=d.prediction, variance=d.variance,
                           log_det_jacobian=jac, generator=torch.Generator().manual_seed(seed))
    ode = ode_log_likelihood(run.denoiser, run.schedule, z, prediction=d.prediction, log_det_jacobian=jac)

    def stat(v):
        v = np.asarray(v, dtype=np.float64)
        return {"mean": float(v.mean()), "stderr": float(v.std(ddof=1) / np.sqrt(len(v)))}

    nll_ode = -ode["log_prob"].numpy()
    terms = {k: stat(vb[k].numpy()) for k in ("prior", "diffusion", "decoder")}
    out = {"n": n, "dim": D,
           "vb_nats": stat(vb["total"].numpy()), "vb_bits_per_dim": nats_to_bits_per_dim(float(vb["total"].mean()), D),
           "vb_terms_nats (standardised units)": terms,
           "ode_nll_nats": stat(nll_ode), "ode_bits_per_dim": nats_to_bits_per_dim(float(nll_ode.mean()), D),
           "ode_nfe": ode["nfe"], "divergence": ode["estimator"],
           "data_log_det_jacobian": jac}
    if toy is not None and toy.log_prob_fn is not None:
        out["kl_data_model_nats"] = stat(toy.log_prob(x) + nll_ode)
    return out


def _reference_sets(run, n: int, seed: int, repeats: int = 5):
    """(references, floor_references, toy, n): ``repeats`` pairs of independent true sets of n
    samples (one pair, disjoint halves of the file, for a user's data file)."""
    from .data import load_array, toy_for

    toy = toy_for(run.cfg.data)
    if toy is not None:
        # seeds far from the training seed (0..), so no set repeats the training data
        base = 1_000_003 + 1009 * seed
        refs = [toy.sample(n, base + 2 * r) for r in range(repeats)]
        floors = [toy.sample(n, base + 2 * r + 1) for r in range(repeats)]
        return refs, floors, toy, n
    data = load_array(run.cfg.data.file)
    perm = np.random.default_rng(seed).permutation(len(data))
    m = min(n, len(data) // 2)
    return [data[perm[:m]]], [data[perm[m:2 * m]]], None, m


def evaluate_run(run, n: int, seed: int, samples: np.ndarray | None = None, sampler_args=None) -> dict:
    """The metrics of ``evaluate`` as a dict (samples drawn if not given)."""
    from .metrics import compare

    refs, floors, toy, n = _reference_sets(run, n, seed)
    if samples is None:
        samples, _ = run.sample(n, seed, **(sampler_args or {}))
    flat = [r.reshape(n, -1) for r in refs], [f.reshape(n, -1) for f in floors]
    metrics = compare(samples[:n].reshape(n, -1), *flat, toy=toy)
    return {"run": str(run.path), "dataset": run.cfg.data.file or run.cfg.data.dataset, "n": n,
            "seed": seed, "step": run.step, "metrics": metrics}


def _format_report(report: dict) -> str:
    lines = [f"run {report['run']}  dataset {report['dataset']}  step {report['step']}  n = {report['n']}",
             f"{'metric':<20}{'model':>14}{'noise floor':>14}{'ratio':>9}"]
    for name, row in report["metrics"].items():
        ratio = row["value"] / row["floor"] if row["floor"] not in (0, 0.0) else float("nan")
        shown = f"{ratio:9.2f}" if name in ("sliced_wasserstein", "mean_error", "cov_error") else f"{'':>9}"
        lines.append(f"{name:<20}{row['value']:>14.5g}{row['floor']:>14.5g}{shown}")
    if "nll" in report:
        r = report["nll"]
        lines.append(f"NLL on {r['n']} test points (data units): variational bound {r['vb_nats']['mean']:.4f} "
                     f"± {r['vb_nats']['stderr']:.4f} nats ({r['vb_bits_per_dim']:.4f} bits/dim); ODE "
                     f"{r['ode_nll_nats']['mean']:.4f} ± {r['ode_nll_nats']['stderr']:.4f} nats "
                     f"({r['ode_bits_per_dim']:.4f} bits/dim, NFE {r['ode_nfe']}, divergence {r['divergence']})")
        t = r["vb_terms_nats (standardised units)"]
        lines.append("  bound terms (nats, standardised units): " +
                     ", ".join(f"{k} {v['mean']:.4f}" for k, v in t.items()))
        if "kl_data_model_nats" in r:
            kl = r["kl_data_model_nats"]
            lines.append(f"  KL(p_data ‖ p_model) = {kl['mean']:.4f} ± {kl['stderr']:.4f} nats")
    return "\n".join(lines)


def cmd_evaluate(args) -> None:
    from .checkpoint import atomic_write_bytes
    from .image_eval import evaluate_images, format_image_report

    run = _load(args)
    if run.is_image:
        if args.nll:
            raise PhysdiffError("--nll is available for vector data only, not yet for image runs")
        report = evaluate_images(run, args.n, args.seed, sampler_args=_sampler_args(args, run),
                                 log=lambda m: print(m, file=sys.stderr))
        atomic_write_bytes(run.path / "evaluation.json", (json.dumps(report, indent=2) + "\n").encode())
        print(json.dumps(report, indent=2) if args.json else format_image_report(report))
        return
    report = evaluate_run(run, args.n or 5000, args.seed, sampler_args=_sampler_args(args, run))
    if args.nll:
        report["nll"] = nll_report(run, args.nll_n, args.seed)
    atomic_write_bytes(run.path / "evaluation.json", (json.dumps(report, indent=2) + "\n").encode())
    print(json.dumps(report, indent=2) if args.json else _format_report(report))


def make_figures(run, n: int, seed: int, samples=None, snaps=None) -> dict:
    """{file name: Figure} of ``plot``: samples beside data, forward and reverse process, loss."""
    import torch

    from . import diffusion as dif
    from .plots import plot_process, plot_samples, snapshot_times

    refs, _, _, n = _reference_sets(run, n, seed, repeats=1)
    reference = refs[0]
    T = run.schedule.T
    times = snapshot_times(run.schedule)
    if samples is None or snaps is None:
        samples, snaps = run.sample(n, seed, snapshot_steps=tuple(times))
    name = run.cfg.data.file or run.cfg.data.dataset
    figs = {"samples.png": plot_samples(reference.reshape(n, -1), samples[:n].reshape(n, -1),
                                        f"{name}: data vs. model (step {run.step})")}
    x0 = run.normalizer.encode(torch.from_numpy(reference).double()).float()
    g = torch.Generator().manual_seed(seed)
    forward = []
    for tt in times:
        if tt == 0:
            forward.append((0, x0.numpy()))
            continue
        t = torch.full((n,), tt - 1, dtype=torch.long)
        forward.append((tt, dif.q_sample(run.schedule, x0, t, torch.randn(x0.shape, generator=g)).numpy()))
    figs["forward.png"] = plot_process([(t, x.reshape(n, -1)) for t, x in forward], T, reverse=False,
                                       title=f"{name}: forward process $x_0 \\to x_T$ (T = {T})")
    figs["reverse.png"] = plot_process([(t, snaps[t].reshape(len(snaps[t]), -1)) for t in sorted(snaps, reverse=True)],
                                       T, reverse=True, title=f"{name}: reverse process $x_T \\to x_0$ (T = {T})")
    return figs | _loss_figure(run)


def _loss_figure(run) -> dict:
    from .plots import plot_loss

    name = run.cfg.data.file or run.cfg.data.dataset
    metrics_path = run.path / "metrics.csv"
    if metrics_path.is_file():
        rows = np.genfromtxt(metrics_path, delimiter=",", names=True, ndmin=1)
        if rows.size:
            return {"loss.png": plot_loss(rows["step"], rows["loss"], rows["lr"], f"{name}: training loss")}
    return {}


def cmd_plot(args) -> None:
    from .image_eval import default_sampler, image_figures

    run = _load(args)
    _check_guidance(args, run)
    if run.is_image:
        figs = image_figures(run, args.seed, sampler_args=default_sampler(run, args.guidance))
        figs |= _loss_figure(run)
    else:
        figs = make_figures(run, args.n, args.seed)
    for fname, fig in figs.items():
        _save_fig(fig, run.path / fname)
        print(f"wrote {run.path / fname}")


def cmd_demo(args) -> None:
    from .checkpoint import atomic_write_bytes
    from .config import Config
    from .plots import snapshot_times
    from .run import LoadedRun
    from .train import resolve_device, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in ("gaussian", "two_gaussians", "spiral"):
        t0 = time.perf_counter()
        cfg = Config().with_overrides({"data.dataset": name, "train.steps": args.steps,
                                       "train.device": args.device})
        run_dir = train(cfg, out / name, overwrite=True, progress=args.progress)
        train_s = time.perf_counter() - t0
        run = LoadedRun(run_dir, device=resolve_device(args.device))
        samples, snaps = run.sample(args.n, 0, snapshot_steps=tuple(snapshot_times(run.schedule)))
        report = evaluate_run(run, args.n, 0, samples)
        atomic_write_bytes(run_dir / "evaluation.json", (json.dumps(report, indent=2) + "\n").encode())
        for fname, fig in make_figures(run, args.n, 0, samples, snaps).items():
            _save_fig(fig, run_dir / fname)
        m = report["metrics"]
        rows.append((name, train_s, m))
        sw = m["sliced_wasserstein"]
        print(f"{name:<14} trained in {train_s:5.1f} s; sliced W2 {sw['value']:.4f} "
              f"(noise floor {sw['floor']:.4f}, ratio {sw['value'] / sw['floor']:.2f})")
    lines = ["# physdiff demo", "",
             f"Each model: default settings, {args.steps} training steps; metrics on n = {args.n} samples "
             "against fresh true samples, beside the noise floor (two independent true sets).", "",
             "| dataset | train time (s) | sliced W2 | floor | ratio | energy dist. | floor "
             "| mean err | floor | cov err | floor |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, secs, m in rows:
        sw, ed = m["sliced_wasserstein"], m["energy_distance"]
        me, ce = m.get("mean_error"), m.get("cov_error")
        cells = [f"{sw['value']:.4f}", f"{sw['floor']:.4f}", f"{sw['value'] / sw['floor']:.2f}",
                 f"{ed['value']:.2e}", f"{ed['floor']:.2e}"]
        cells += [f"{me['value']:.4f}", f"{me['floor']:.4f}"] if me else ["–", "–"]
        cells += [f"{ce['value']:.4f}", f"{ce['floor']:.4f}"] if ce else ["–", "–"]
        lines.append(f"| {name} | {secs:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "Figures: `<dataset>/samples.png`, `forward.png`, `reverse.png`, `loss.png`."]
    atomic_write_bytes(out / "metrics.md", ("\n".join(lines) + "\n").encode())
    print(f"wrote {out / 'metrics.md'}")


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from .config import Config
    from .data import IMAGE_DATASETS, TOY_DATASETS

    defaults = Config()
    p = _Parser(prog="physdiff", description="Train, sample, evaluate and plot diffusion models (DDPM).",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def add(name, help_):
        return sub.add_parser(name, help=help_, description=help_, epilog=EPILOGS[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    s = add("data", "Write samples of a true toy distribution to a .npy file.")
    s.add_argument("name", metavar="NAME", help=f"one of: {', '.join(TOY_DATASETS)}")
    s.add_argument("--n", type=_positive_int, default=5000, help="number of samples (default 5000)")
    s.add_argument("--seed", type=_nonneg_int, default=0)
    s.add_argument("--out", required=True, help="output .npy, shape (N, 2)")
    s.set_defaults(func=cmd_data)

    s = add("train", "Train a model into a run directory.")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--dataset", help=f"toy dataset ({', '.join(TOY_DATASETS)}) or image set "
                     f"({', '.join(IMAGE_DATASETS)}); default {defaults.data.dataset}")
    src.add_argument("--data", metavar="FILE", help="your own (N, D) .npy or .csv file")
    s.add_argument("--out", required=True, metavar="RUN", help="run directory to create")
    s.add_argument("--config", metavar="FILE.toml", help="TOML config; options given here override it")
    s.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    s.add_argument("--overwrite", action="store_true", help="replace an existing run in RUN")
    for k, (_, _, help_) in TRAIN_FLAGS.items():
        s.add_argument("--" + k, action="store_true", help=help_)
    for k, (key, typ) in TRAIN_OPTIONS.items():
        if k == "dataset":
            continue
        section, name = key.split(".")
        default = getattr(getattr(defaults, section), name)
        s.add_argument("--" + k.replace("_", "-"), type=typ, default=None, help=f"{key} (default {default})")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on when stderr is a terminal)")
    s.set_defaults(func=cmd_train)

    def run_options(s, n_default=5000, n_help=None):
        s.add_argument("run", metavar="RUN", help="run directory written by `physdiff train`")
        s.add_argument("--n", "--num-samples", dest="n", type=_positive_int, default=n_default,
                       help=(n_help or f"number of samples (default {n_default})")
                       + "; under torchrun write --num-samples")
        s.add_argument("--seed", type=_nonneg_int, default=0, help="sample i depends only on (seed, i)")
        s.add_argument("--weights", default="ema", help="ema (default) or model")
        s.add_argument("--device", default="auto", help="auto, cpu or cuda")

    def sampler_options(s):
        s.add_argument("--sampler", default=None,
                       help="ddpm, ddim, dpm-solver or ode (default: ddpm; for images ddpm on 100 steps)")
        s.add_argument("--steps", type=_positive_int, default=None,
                       help="K network evaluations (default: T for ddpm/ddim, 20 for dpm-solver)")
        s.add_argument("--guidance", type=_finite_float, default=None,
                       help="classifier-free guidance w for class-conditional runs (default 0.5)")
        s.add_argument("--eta", type=_finite_float, default=0.0, help="DDIM η in [0, 1] (default 0)")
        s.add_argument("--spacing", default=None, help="timesteps: uniform, quadratic, trailing, logsnr")

    s = add("sample", "Draw samples from a trained run (data units) into a .npy file.")
    run_options(s)
    sampler_options(s)
    s.add_argument("--out", required=True, help="output .npy, shape (N, *data_shape)")
    s.add_argument("--trajectory", metavar="FILE.npy", help="also save snapshots of the reverse process, (K, N, ...)")
    s.add_argument("--snapshots", type=_positive_int, default=11, help="K for --trajectory (default 11, ≥ 2)")
    s.add_argument("--batch-size", type=_positive_int, default=None,
                   help="samples per network batch (default 4096; 512 for images); results do not depend on it")
    s.add_argument("--class", dest="klass", type=_nonneg_int, default=None,
                   help="class-conditional runs: draw every sample of this class (default: i mod K)")
    s.add_argument("--png", metavar="FILE.png", help="image runs: also write the samples as a PNG grid")
    s.set_defaults(func=cmd_sample)

    s = add("evaluate", "Distances between model samples and fresh true samples, beside their noise floors.")
    run_options(s, None, "number of samples (default 5000; image runs: the size of the training split, "
                         "so the FCD compares with its floor)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--nll", action="store_true", help="also the variational bound and ODE log-likelihood")
    s.add_argument("--nll-n", type=_positive_int, default=500, help="test points for --nll (default 500)")
    sampler_options(s)
    s.set_defaults(func=cmd_evaluate)

    s = add("encode", "Deterministic DDIM inversion: data points to their latents x_T.")
    s.add_argument("run", metavar="RUN")
    s.add_argument("--data", required=True, metavar="FILE", help=".npy or .csv of points in data units")
    s.add_argument("--out", required=True, help="output .npy of latents (standardised units)")
    s.add_argument("--steps", type=_positive_int, default=None, help="DDIM steps (default T)")
    s.add_argument("--weights", default="ema")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_encode)

    s = add("plot", "Write the run's figures: samples vs data, forward and reverse process, loss.")
    run_options(s, 3000)
    s.add_argument("--guidance", type=_finite_float, default=None, help="image runs: guidance w (default 0.5)")
    s.set_defaults(func=cmd_plot)

    s = add("demo", "The course's tour: train gaussian, two_gaussians and spiral; figures and a metrics table.")
    s.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    s.add_argument("--steps", type=_positive_int, default=defaults.train.steps)
    s.add_argument("--n", type=_positive_int, default=5000)
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f"physdiff: warning: {message}", file=sys.stderr)

    old = warnings.showwarning
    warnings.showwarning = one_line_warning
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "snapshots", 2) < 2 and getattr(args, "trajectory", None):
            raise PhysdiffError("--snapshots must be >= 2")
        args.func(args)
    except PhysdiffError as exc:
        message = " ".join(str(exc).splitlines())  # always one line
        print(f"physdiff: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("physdiff: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = old
    return 0


if __name__ == "__main__":
    sys.exit(main())
