"""Digits at default settings: training time, the image metrics against their floors across
guidance scales, the figures; then U-Net time per training step and samples/s at 8×8 and 28×28.

    .venv/bin/python benchmarks/bench_digits.py [--out benchmarks/digits] [--run runs/digits]

Writes OUT/report.json and OUT/{samples,reverse,guidance,nearest,loss}.png. With --run pointing
at an existing run, training is skipped (its time is then not measured).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import torch

from physdiff.config import config_from_dict
from physdiff.evaluation import images, loss_figure
from physdiff.nets.unet import UNet
from physdiff.run import DEFAULT_GUIDANCE, LoadedRun
from physdiff.training import train


def speed(shape, mult, batch=128, n_sample=512, reps=10):
    """(ms per training step, U-Net evaluations per second at batch n_sample)."""
    net = UNet(shape[0], 32, mult, num_classes=10)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, fused=True)
    x, t, c = torch.randn(batch, *shape), torch.randint(1000, (batch,)), torch.randint(11, (batch,))
    for i in range(reps + 3):
        if i == 3:
            t0 = time.perf_counter()
        loss = (net(x, t, c) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    step_ms = (time.perf_counter() - t0) / reps * 1000
    net.eval()
    with torch.no_grad():
        xs, ts = torch.randn(n_sample, *shape), torch.randint(1000, (n_sample,))
        net(xs, ts)
        t0 = time.perf_counter()
        for _ in range(3):
            net(xs, ts)
        evals = 3 * n_sample / (time.perf_counter() - t0)
    return step_ms, evals


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/digits")
    p.add_argument("--run", default="runs/digits-default")
    p.add_argument("--guidance", default="0,0.5,1,2,3")
    args = p.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    run_dir = Path(args.run)
    if not (run_dir / "ema.safetensors").is_file():
        t0 = time.perf_counter()
        train(config_from_dict({"data": {"dataset": "digits"}, "train": {"device": "cpu"}}), run_dir, progress=False)
        report["train_seconds"] = time.perf_counter() - t0
        print(f"trained digits in {report['train_seconds']:.1f} s", flush=True)
    run = LoadedRun(run_dir)
    report["steps"] = run.step
    rows = {}
    for w in (float(v) for v in args.guidance.split(",")):
        t0 = time.perf_counter()
        r = images.evaluate(run, None, 0, sampler_args=run.default_sampler(w))
        secs = time.perf_counter() - t0
        rows[w] = r
        m = r["metrics"]
        print(f"w={w:g} ({secs:.0f} s): " + ", ".join(f"{k} {v['value']:.4g} (floor {v['floor']:.4g})"
                                                     for k, v in m.items()), flush=True)
    report["by_guidance"] = {str(w): r for w, r in rows.items()}
    # the same at default guidance with fast deterministic samplers
    for name, sargs in (("dpm-solver@20", {"sampler": "dpm-solver", "steps": 20}),
                        ("ddim@50", {"sampler": "ddim", "steps": 50})):
        t0 = time.perf_counter()
        r = images.evaluate(run, None, 0, sampler_args=sargs)
        secs = time.perf_counter() - t0
        report[name] = r | {"seconds": secs}
        print(f"{name} ({secs:.0f} s): " + ", ".join(f"{k} {v['value']:.4g}" for k, v in r["metrics"].items()),
              flush=True)
    figs = images.figures(run, 0, sampler_args=run.default_sampler(), report=rows.get(DEFAULT_GUIDANCE))
    figs |= loss_figure(run)
    for fname, fig in figs.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=130)
        (out / fname).write_bytes(buf.getvalue())
    report["speed"] = {}
    for label, shape, mult in (("8x8", (1, 8, 8), (1, 2)), ("28x28", (1, 28, 28), (1, 2))):
        step_ms, evals = speed(shape, mult)
        report["speed"][label] = {"train_ms_per_step_batch128": step_ms, "unet_evals_per_s": evals,
                                  "samples_per_s_ddpm100_guided": evals / 200}
        print(f"{label}: {step_ms:.1f} ms/step (batch 128), {evals:.0f} U-Net evals/s, "
              f"{evals / 200:.1f} samples/s with 100 guided steps", flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {out}/report.json")


if __name__ == "__main__":
    main()
