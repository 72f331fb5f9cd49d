"""The course's tour: train gaussian, two_gaussians and spiral with the defaults, sample,
evaluate each beside its noise floor, write the figures and a metrics table."""

from __future__ import annotations

import time
from pathlib import Path

from .checkpoint import atomic_write_bytes, save_figure
from .config import Config
from .errors import PhysdiffError
from .evaluation import evaluate, vectors, write_report
from .plots import snapshot_times
from .provenance import recorded
from .run import LoadedRun
from .training import resolve_device, train

DEMO_DATASETS = ("gaussian", "two_gaussians", "spiral")
DEMO_MARKER = "metrics.md"


def check_demo_folder(out: Path, overwrite: bool) -> None:
    """Refuse a folder that holds anything but an earlier demo (whose runs the demo replaces)."""
    if out.exists() and not out.is_dir():
        raise PhysdiffError(f"demo output {str(out)!r} is a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    ours = set(DEMO_DATASETS) | {DEMO_MARKER}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if foreign or not (out / DEMO_MARKER).is_file():
        raise PhysdiffError(f"demo output folder {str(out)!r} already holds files that are not an earlier demo "
                            f"({', '.join(foreign[:3]) or 'no ' + DEMO_MARKER}); choose an empty or new folder")
    if not overwrite:
        raise PhysdiffError(f"demo output folder {str(out)!r} holds an earlier demo; allow replacing it "
                            "or choose another folder")


@recorded
def run_demo(out: str | Path, *, steps: int, n: int, device: str = "auto", progress=None,
             overwrite: bool = False, log=print) -> Path:
    """Train, sample, evaluate and plot the three datasets of the course into ``out``; returns
    the path of the metrics table. ``progress``: of the training and the sampling (``progress.py``)."""
    out = Path(out)
    check_demo_folder(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in DEMO_DATASETS:
        t0 = time.perf_counter()
        cfg = Config().with_overrides({"data.dataset": name, "train.steps": steps, "train.device": device})
        run_dir = train(cfg, out / name, overwrite=True, progress=progress)
        train_s = time.perf_counter() - t0
        run = LoadedRun(run_dir, device=resolve_device(device))
        res = run.sample(n, 0, snapshot_steps=tuple(snapshot_times(run.schedule)), progress=progress)
        samples, snaps = res.samples, res.snapshots
        report = evaluate(run, n, 0, samples)
        write_report(run, report)
        for fname, fig in vectors.figures(run, n, 0, samples, snaps).items():
            save_figure(fig, run_dir / fname)
        m = report["metrics"]
        rows.append((name, train_s, m))
        sw = m["sliced_wasserstein"]
        log(f"{name:<14} trained in {train_s:5.1f} s; sliced W2 {sw['value']:.4f} "
            f"(noise floor {sw['floor']:.4f}, ratio {vectors.format_ratio(sw)})")
    lines = ["# physdiff demo", "",
             f"Each model: default settings, {steps} training steps; metrics on n = {n} samples "
             "against fresh true samples, beside the noise floor (two independent true sets).", "",
             "| dataset | train time (s) | sliced W2 | floor | ratio | energy dist. | floor "
             "| mean err | floor | cov err | floor |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, secs, m in rows:
        sw, ed = m["sliced_wasserstein"], m["energy_distance"]
        me, ce = m.get("mean_error"), m.get("cov_error")
        cells = [f"{sw['value']:.4f}", f"{sw['floor']:.4f}", vectors.format_ratio(sw),
                 f"{ed['value']:.2e}", f"{ed['floor']:.2e}"]
        cells += [f"{me['value']:.4f}", f"{me['floor']:.4f}"] if me else ["–", "–"]
        cells += [f"{ce['value']:.4f}", f"{ce['floor']:.4f}"] if ce else ["–", "–"]
        lines.append(f"| {name} | {secs:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "Figures: `<dataset>/samples.png`, `forward.png`, `reverse.png`, `loss.png`."]
    atomic_write_bytes(out / DEMO_MARKER, ("\n".join(lines) + "\n").encode())
    return out / DEMO_MARKER
