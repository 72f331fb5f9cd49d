"""Training speed: physdiff's loop against a bare PyTorch DDPM loop of the same network,
batch and steps, in the same run. Also times `physdiff train --dataset spiral` at its
defaults end to end and the ancestral sampler's throughput.

    .venv/bin/python benchmarks/bench_train.py [--steps 2000] [--repeats 3]

Prints a table; ratio = bare time / physdiff time (≥ 0.95 means physdiff adds ≤ ~5%).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from physdiff.config import Config
from physdiff.data import Normalizer, training_array
from physdiff.nets import build_model
from physdiff.run import LoadedRun
from physdiff.schedule import make_schedule
from physdiff.training import train


def bare_loop(cfg: Config, steps: int) -> float:
    """The textbook loop: index draw, q_sample, ε-MSE, AdamW. No EMA, clipping, lr schedule,
    logging or checkpoints. Returns seconds."""
    raw = training_array(cfg.data)
    data = Normalizer.standardize(raw).encode(torch.from_numpy(raw)).float()
    torch.manual_seed(0)
    model = build_model(cfg.model, (data.shape[1],))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    ab = make_schedule("linear", cfg.diffusion.timesteps).alpha_bar.float()
    g = torch.Generator().manual_seed(0)
    B, T = cfg.train.batch_size, cfg.diffusion.timesteps
    t0 = time.perf_counter()
    for _ in range(steps):
        x0 = data[torch.randint(len(data), (B,), generator=g)]
        t = torch.randint(T, (B,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = ab[t][:, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = ((model(xt, t) - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def ours(cfg: Config) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(cfg, Path(tmp) / "run", progress=False)
        return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(2)
    cfg = Config().with_overrides({"train.steps": args.steps, "train.device": "cpu"})
    ours(cfg.with_overrides({"train.steps": 50}))  # warm-up
    bare_loop(cfg, 50)
    t_bare = min(bare_loop(cfg, args.steps) for _ in range(args.repeats))
    t_ours = min(ours(cfg) for _ in range(args.repeats))
    print(f"{'loop':<34}{'time (s)':>10}{'steps/s':>10}")
    print(f"{'bare PyTorch DDPM loop':<34}{t_bare:>10.2f}{args.steps / t_bare:>10.0f}")
    print(f"{'physdiff train (EMA, clip, ckpt)':<34}{t_ours:>10.2f}{args.steps / t_ours:>10.0f}")
    print(f"ratio bare/physdiff = {t_bare / t_ours:.3f}   (batch {cfg.train.batch_size}, "
          f"ResMLP width {cfg.model.mlp.width} depth {cfg.model.mlp.depth}, {args.steps} steps, "
          f"best of {args.repeats})")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_dir = train(Config().with_overrides({"train.device": "cpu"}), Path(tmp) / "spiral", progress=False)
        t_default = time.perf_counter() - t0
        run = LoadedRun(run_dir)
        t0 = time.perf_counter()
        run.sample(5000, 0)
        t_sample = time.perf_counter() - t0
    print(f"default `physdiff train --dataset spiral`: {t_default:.1f} s for {Config().train.steps} steps")
    print(f"ancestral sampling, T = 1000, 5000 samples: {t_sample:.1f} s ({5000 / t_sample:.0f} samples/s)")


if __name__ == "__main__":
    main()
