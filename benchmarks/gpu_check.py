"""GPU check: the same runs on CPU and on CUDA give the same samples, log-densities and
likelihoods (float tolerance), training and resuming on CUDA work, and the speed of each sampler
on both. Needs a CUDA device; prints a table and writes gpu_check.json.

    python benchmarks/gpu_check.py [--out gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from physdiff import LoadedRun, config_from_dict, train
from physdiff.evaluation import evaluate


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--device", default="cuda", help="the device compared with the CPU (cpu: a dry run)")
    p.add_argument("--quick", action="store_true", help="a tenth of the training steps (dry run)")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device")
    dev, scale = args.device, (10 if args.quick else 1)
    rows, report = [], {"device": torch.cuda.get_device_name(0) if dev == "cuda" else dev, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        for name, raw, n, cases in (
            ("spiral", {"data": {"dataset": "spiral"}, "train": {"steps": 2000}}, 4000,
             [("ddpm", {}), ("ddim", {"steps": 50}), ("dpm-solver", {}), ("ode", {"log_prob": True})]),
            ("phi4 L=8", {"data": {"dataset": "phi4", "L": 8, "kappa": 0.2705, "n_train": 2000},
                          "train": {"steps": 1000}}, 1000, [("ddpm", {}), ("ode", {"log_prob": True})]),
            ("digits", {"data": {"dataset": "digits"}, "train": {"steps": 300}}, 256,
             [("ddpm", {"steps": 100, "classes": 3}), ("ddim", {"steps": 50})]),
        ):
            cfg = config_from_dict(raw, {"train.device": dev, "train.steps": raw["train"]["steps"] // scale})
            (path, t_train) = timed(lambda cfg=cfg, name=name: train(cfg, Path(tmp) / name.split()[0], progress=False))
            # resume on CUDA extends the run
            (_, t_resume) = timed(lambda path=path, cfg=cfg: train(None, path, resume=True,
                                                                   steps=cfg.train.steps + 100, progress=False))
            runs = {"cpu": LoadedRun(path, device="cpu"), "cuda": LoadedRun(path, device=dev)}
            report[name] = {"train_seconds_cuda": t_train, "resume_seconds": t_resume}
            for sampler, opts in cases:
                res = {}
                for d, run in runs.items():
                    out, t = timed(lambda run=run, n=n, s=sampler, o=opts: run.sample(n, 3, sampler=s, **o))
                    res[d] = (out.samples, out.log_prob, t)
                dx = float(np.abs(res["cpu"][0] - res["cuda"][0]).max())
                dlq = (float(np.abs(res["cpu"][1] - res["cuda"][1]).max()) if res["cpu"][1] is not None else None)
                rows.append((name, sampler, n, res["cpu"][2], res["cuda"][2], dx, dlq))
            (_, t_eval) = timed(lambda path=path: evaluate(LoadedRun(path, device=dev), 512, seed=0,
                                                           log=lambda *a: None))
            report[name]["evaluate_seconds_cuda"] = t_eval
    print("| data | sampler | n | CPU s | CUDA s | max |Δx| | max |Δlog q| |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, sampler, n, tc, tg, dx, dlq in rows:
        print(f"| {name} | {sampler} | {n} | {tc:.2f} | {tg:.2f} | {dx:.2e} | {'–' if dlq is None else f'{dlq:.2e}'} |")
    keys = ("data", "sampler", "n", "cpu_s", "cuda_s", "max_dx", "max_dlogq")
    report["rows"] = [dict(zip(keys, r, strict=True)) for r in rows]
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
