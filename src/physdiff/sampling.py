"""Samples of a trained run written to files: the job behind ``physdiff sample``, decided once.

- the sampler: :func:`resolve_sampler` (the one place where the default sampler is worked out:
  the one named, else the density sampler when a density is asked for, else the data kind's);
- outputs: every file named is checked before any work (:func:`check_outputs`), rows of every
  file line up with the samples file, and a command's files are written together at the end;
- large sample sets are streamed to disk in chunks of indices (sample i depends only on (seed, i),
  so the file is the one an unchunked call would write);
- under torchrun each process draws a contiguous share of the indices and rank 0 writes;
- lattice runs: the samples are an ensemble with its JSON beside it; with ``metropolis`` the
  exact sampler (``lattice/exact_sampler.sample_exact``) turns proposals into a chain of e^{−S}.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from pathlib import Path

import numpy as np

from .checkpoint import check_memory, check_outputs, new_output, npy_output
from .errors import PhysdiffError
from .lattice.exact_sampler import check_metropolis
from .progress import progress_bar
from .provenance import current, recorded
from .run import check_density

STREAM_BYTES = 256 * 2**20  # samples beyond this size are written to disk chunk by chunk


# ---------------------------------------------------------------- the sampler


def resolve_sampler(run, sampler: str | None = None, options: dict | None = None, *, guidance: float | None = None,
                    log_prob: bool = False) -> dict:
    """{"sampler": name, "guidance": w, **options} checked by the registry: ``sampler`` if named;
    else, when a density is asked for (``log_prob``), the registry's density sampler; else the
    data kind's default with its options. Options the sampler does not take are refused."""
    from .samplers import check_options, density_names, density_sampler, get_sampler

    if guidance is not None and not run.num_classes:
        raise PhysdiffError("guidance (--guidance) needs a class-conditional run; this run was trained without labels")
    given = {k: v for k, v in (options or {}).items() if v is not None}
    if sampler is None and log_prob:
        name = density_sampler().name
    elif sampler is None:
        defaults = run.default_sampler()
        name = defaults.pop("sampler")
        defaults.pop("guidance")
        given = defaults | given
    else:
        name = sampler
        get_sampler(name)
    try:
        given = run.with_fitted_timesteps(name, given, guidance)
    except PhysdiffError as exc:
        raise PhysdiffError(f"sampler {name!r} (--sampler): {exc}") from None
    if log_prob and not get_sampler(name).exact_density:
        raise PhysdiffError("a log-density (log_prob, --log-prob) needs the sampler "
                            f"{' or '.join(density_names())}: only a "
                            f"sampler with an exact density can give it, and {name!r} has none")
    try:
        checked = check_options(name, given, run.schedule.T)
    except PhysdiffError as exc:
        raise PhysdiffError(f"sampler {name!r} (--sampler): {exc}") from None
    return {"sampler": name, "guidance": guidance} | checked | ({"log_prob": True} if log_prob else {})


# ---------------------------------------------------------------- the job


@recorded
def write_samples(run, n: int, seed: int, out: Path, *, sampler: str | None = None, options: dict | None = None,
                  guidance: float | None = None, classes=None, batch_size: int | None = None,
                  log_prob_out: Path | None = None, trajectory_out: Path | None = None, snapshots: int = 11,
                  png_out: Path | None = None, metropolis: bool = False, burn_in: int | None = None,
                  log_q_check: int | None = None, theory=None, overwrite: bool = False,
                  generator: str = "physdiff sample", progress=None) -> str | None:
    """Draw n samples of ``run`` and write them to ``out`` (with the optional log-densities,
    trajectory, PNG grid and, for lattice runs, the ensemble's JSON with its ``"provenance"``,
    ``provenance.py``). Returns the summary line (None on the processes of a torchrun job other
    than rank 0). ``theory``: the target of a ``metropolis`` chain other than the run's own
    (another coupling); its JSON then also gives the free-energy difference to the run's own
    theory from the same proposals. ``progress``: a bar counting samples, or proposals with
    ``metropolis`` (``progress.py``)."""
    from . import dist
    from .lattice.ensemble import sidecar

    info = run.kind.sidecar(run.cfg, generator, {})
    side = sidecar(out) if info is not None else None
    check_outputs(overwrite, out, log_prob_out, trajectory_out, png_out, side)
    if png_out is not None and not run.is_image:
        raise PhysdiffError("a PNG grid (png_out, --png) needs an image run; this run's data have shape "
                            f"{run.data_shape}")
    if metropolis:
        check_metropolis(run, sampler)
        if n < 2:
            raise PhysdiffError(f"a Metropolis chain (metropolis, --metropolis) needs n >= 2 (--n; got {n}): "
                                "a chain of one state has no acceptance, "
                                "τ_int or error")
    elif burn_in is not None:
        raise PhysdiffError("burn_in (--burn-in) applies to Metropolis chains only (metropolis, --metropolis)")
    elif log_q_check is not None:
        raise PhysdiffError("log_q_check (--log-q-check) applies to Metropolis chains only (metropolis, --metropolis)")
    if log_prob_out is not None:
        check_density(run, "--log-prob")
    sargs = resolve_sampler(run, sampler, options, guidance=guidance, log_prob=bool(log_prob_out) or metropolis)
    nbytes = n * math.prod(run.data_shape) * 4
    streamable = not (trajectory_out or metropolis or png_out) and dist.world_size() == 1
    if streamable and nbytes > STREAM_BYTES:
        return _write_streamed(run, n, seed, out, sargs, classes, batch_size, log_prob_out, side, generator, nbytes,
                               progress)
    check_memory(nbytes * (3 if trajectory_out else 2), f"--n {n} samples")
    T = run.schedule.T
    steps = tuple(sorted({round(T * k / (snapshots - 1)) for k in range(snapshots)}, reverse=True))
    snapshot_steps = steps if trajectory_out else ()
    t0 = time.perf_counter()
    extra, report = "", {}
    if metropolis:  # proposals with log q, action, Metropolis (gathered on rank 0)
        chain = _exact_chain(run, n, seed, sargs, batch_size=batch_size, snapshot_steps=snapshot_steps,
                             burn_in=burn_in, log_q_check=log_q_check, theory=theory, progress=progress)
        if chain is None:  # not rank 0
            return None
        x, logp, nfe, snaps, rows, report = chain
        extra = exact_summary(report)
    else:
        lo, hi = dist.shard(n)
        res = run.sample(hi - lo, seed, start=lo, batch_size=batch_size, classes=classes,
                         snapshot_steps=snapshot_steps, progress=progress, **sargs)
        x = run.kind.to_output(dist.gather_rows(res.samples), run.cfg)
        logp = dist.gather_rows(res.log_prob) if log_prob_out else None
        nfe, snaps, rows = res.nfe, {k: dist.gather_rows(v) for k, v in res.snapshots.items()}, None
    kept = [k for k in steps if k in snaps]  # a respaced sampler visits only some steps
    traj = None
    if trajectory_out is not None:
        import torch

        traj = np.stack([run.normalizer.decode(torch.from_numpy(snaps[k]).double()).numpy() for k in kept], axis=0)
        traj = traj if rows is None else traj[:, rows]  # (K, N, ...)
    elapsed = time.perf_counter() - t0
    if not dist.is_main():
        return None
    files = {out: (x, "float32")}
    if log_prob_out is not None:
        files[log_prob_out] = (logp, "float64")
    if traj is not None:
        files[trajectory_out] = (traj, "float32")
    _commit(files, side, None if info is None else _sidecar(run, generator, sargs, report, rows), png_out)
    procs = f", {dist.world_size()} processes" if dist.world_size() > 1 else ""
    on = ""
    if "timesteps" in sargs:  # given on the command line, else the run's fitted ones (resolve_sampler)
        on = " on the given timesteps" if "timesteps" in (options or {}) else " on the run's fitted timesteps"
    msg = (f"wrote {n} samples to {out} with {sargs['sampler']}{on} (NFE {nfe} per batch; {elapsed:.1f} s, "
           f"{n / elapsed:.0f} samples/s{procs})")
    if png_out is not None:
        msg += f"; PNG grid {png_out}"
    if traj is not None:
        msg += f"; trajectory {traj.shape} at t = {kept} to {trajectory_out}"
    if log_prob_out is not None:
        msg += f"; log-densities (nats, data units) to {log_prob_out}"
    return msg + extra



def _exact_chain(run, n: int, seed: int, sargs: dict, *, theory=None, **options):
    """The exact sampler's chain (``lattice/exact_sampler.sample_exact``) with every output lined
    up with it: (states, their log q, NFE, snapshots, the proposal of each row, the report); None
    on the processes of a torchrun job other than rank 0. ``theory``: another target than the
    run's own, whose report then also holds the free-energy difference to the run's theory."""
    from .lattice.exact_sampler import free_energy_difference, sample_exact

    opts = {k: v for k, v in sargs.items() if k not in ("sampler", "guidance", "log_prob")}
    exact = sample_exact(run, n, seed, sampler=sargs["sampler"], theory=theory, **options, **opts)
    if exact is None:
        return None
    # every file lines up with the samples file: row i is the chain's state at step i
    rows_text = ("every output row is the chain's state at that step: the samples, log-densities and "
                 "trajectory of proposal chain_index[i]")
    if run.embedding is not None:
        rows_text += " (the samples: spins drawn afresh at each step given that proposal's continuous variable)"
    report = exact.report | {"rows": rows_text}
    if theory is not None and theory != run.theory:
        report["free_energy_difference"] = free_energy_difference(exact, run.theory, run.embedding)
        report["free_energy_difference"]["labels"] = [theory.label, run.theory.label]
    return exact.chain, exact.log_q[exact.indices], exact.nfe, exact.snapshots, exact.indices, report


def exact_summary(report: dict) -> str:
    """The summary of an exact chain's report: acceptance, ESS/N, log Z (with the finer solve
    when the solver check ran, its error covering the solver's bias, the run's own solve beside
    it: ``exact_sampler.refined_log_z``), the free-energy difference to the run's own theory and
    the solver check."""
    lz = report["log_z"]
    out = (f"; Metropolis acceptance {report['acceptance']:.3f}, ESS/N {report['ess_per_sample']:.3f} ± "
           f"{report['ess_per_sample_error']:.3f}; log Z = {lz['value']:.4f} ± {lz['error']:.4f}")
    if "log_z_raw" in report:
        raw = report["log_z_raw"]
        out += (f" (with the finer solve, {lz['solver']}: statistical {lz['statistical_error']:.4f}, solver "
                f"{math.hypot(lz['shift_error'], lz['solver_systematic']):.4f}; the run's own solve gives "
                f"{raw['value']:.4f} ± {raw['error']:.4f})")
    out += f" ({lz['warning']})" if "warning" in lz else ""
    if "free_energy_difference" in report:
        fd = report["free_energy_difference"]
        target, own = fd["labels"]
        out += f"; log Z({target}) − log Z({own}) = {fd['log_z']['value']:.4f} ± {fd['log_z']['error']:.4f}"
    if "log_q_check" in report:
        chk = report["log_q_check"]
        out += (f"; solver check on {chk['n']} proposals ({chk['check']} against {chk['solver']}): Δlog q "
                f"std {chk['dlog_q']['std']:.2g} nats, largest shift {chk['largest_shift_in_errors']:.2f} errors"
                + (f" — warning: {chk['warning']}" if "warning" in chk else ""))
    return out


def _sidecar(run, generator: str, sargs: dict, report: dict, rows) -> dict:
    info = run.kind.sidecar(run.cfg, generator, {k: v for k, v in sargs.items() if k != "log_prob"}) | report
    if rows is not None:
        info["chain_index"] = [int(i) for i in rows]
    return info | {"provenance": current().record(run.device)}


def _commit(files: dict, side: Path | None, info: dict | None, png_out: Path | None) -> None:
    """A command's outputs written together (``checkpoint.write_together``): the arrays, the PNG
    grid, then the ensemble's JSON; a failure (a full disk) leaves none of them."""
    from .checkpoint import bytes_writer, json_text, npy_writer, write_together

    outputs = [(path, npy_writer(arr, dtype)) for path, (arr, dtype) in files.items()]
    if png_out is not None:
        from .data.images import save_png_grid

        outputs.append((png_out, lambda tmp: save_png_grid(files[next(iter(files))][0], tmp)))
    if info is not None:
        outputs.append((side, bytes_writer((json_text(info) + "\n").encode())))
    write_together(outputs)


def _write_streamed(run, n, seed, out, sargs, classes, batch_size, log_prob_out, side, generator, nbytes,
                    progress=None) -> str:
    """Samples too large to hold twice in memory: drawn in chunks of indices into memory maps
    that are renamed into place at the end; nothing is left behind on an error or interrupt."""
    from .checkpoint import atomic_write_bytes, json_text, npy_stream

    need = nbytes + (n * 8 if log_prob_out else 0)
    for folder in {out.parent, *([log_prob_out.parent] if log_prob_out else [])}:
        free = shutil.disk_usage(folder).free
        if need > free:
            raise PhysdiffError(f"{n} samples (--n) need about {need / 2**30:.1f} GiB on disk but {str(folder)!r} "
                                f"has {free / 2**30:.1f} GiB free; ask for fewer or write elsewhere")
    shape = (n, *run.kind.output_shape(run.data_shape, run.cfg))
    chunk = max(1, STREAM_BYTES // (4 * math.prod(run.data_shape)))
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        arr = stack.enter_context(npy_stream(out, shape))
        logp = stack.enter_context(npy_stream(log_prob_out, (n,), "float64")) if log_prob_out else None
        bar = stack.enter_context(progress_bar(progress, n, f"sample ({sargs['sampler']}, streamed)", "sample"))
        for lo in range(0, n, chunk):
            count = min(chunk, n - lo)
            res = run.sample(count, seed, start=lo, batch_size=batch_size, classes=classes, progress=bar, **sargs)
            arr[lo:lo + count] = run.kind.to_output(res.samples, run.cfg)
            if logp is not None:
                logp[lo:lo + count] = res.log_prob
    if side is not None:
        info = _sidecar(run, generator, sargs, {}, None)
        atomic_write_bytes(side, (json_text(info) + "\n").encode())
    elapsed = time.perf_counter() - t0
    extra = f"; log-densities (nats, data units) to {log_prob_out}" if log_prob_out else ""
    return (f"wrote {n} samples to {out} in chunks of {chunk} with {sargs['sampler']} ({elapsed:.1f} s, "
            f"{n / elapsed:.0f} samples/s){extra}")


__all__ = ["STREAM_BYTES", "check_density", "check_memory", "check_metropolis", "check_outputs", "new_output",
           "npy_output", "resolve_sampler", "write_samples"]
