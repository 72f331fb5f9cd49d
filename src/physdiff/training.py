"""The training loop: AdamW, warm-up + cosine learning rate, gradient clipping, EMA,
checkpoints and bitwise-exact resume.

The whole training set lives in one tensor on the device; a batch is a draw of indices.
Every random draw (batch indices, timesteps, noise) comes from one ``torch.Generator``
whose state is saved with each checkpoint, so a resumed run continues the exact same
stream.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import checkpoint as ck
from . import dist, seeding
from .config import Config, dump_config, load_config, resolve_auto
from .data import Normalizer, check_array, data_fingerprint, load_training, resolve_kind
from .devices import resolve_device
from .errors import PhysdiffError
from .lattice.conditioning import conditioning_of
from .lattice.theory import theory_source
from .nets import build_model
from .objective import DenoisingLoss
from .progress import progress_bar
from .provenance import current, recorded, utc_now
from .schedule import make_schedule

METRICS_HEADER = "step,loss,lr,grad_norm,steps_per_s,elapsed_s"
VALIDATION_COLUMN = "val_loss"  # runs with held-out rows: the objective on them (Trainer.validation_loss)
VALIDATION_ROWS = 4096  # rows of the validation loss: the held-out points repeated (each its own t, noise) or cut
VALIDATION_SEED = 0x7A11D_0B5  # one fixed set of t and noise draws for the validation loss, at every log


def metrics_header(validation: bool) -> str:
    """The header of a run's metrics.csv: with the validation-loss column when rows are held out."""
    return METRICS_HEADER + (f",{VALIDATION_COLUMN}" if validation else "")


def lr_at(step: int, cfg) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up to ``lr``, then cosine decay to
    ``lr · lr_min_ratio`` at the last step (Loshchilov & Hutter 2017, without restarts)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    progress = min((step - cfg.warmup) / span, 1.0)
    floor = cfg.lr * cfg.lr_min_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))


@dataclass
class Trainer:
    """Everything a training run holds in memory."""

    cfg: Config
    run: Path
    device: torch.device
    data: torch.Tensor  # (N, *data_shape), normalised, float32, on device
    labels: torch.Tensor | None  # (N,) int64 on device, or None (unconditional)
    class_names: tuple[str, ...]
    normalizer: Normalizer
    fingerprint: str
    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    scaler: torch.amp.GradScaler
    data_range: list  # [min, max] over the training data, data units
    step: int = 0
    validation: torch.Tensor | None = None  # (K, *data_shape) held-out rows, normalised, float32, on device
    held_out: np.ndarray | None = None  # (K,) their rows in the data file (validation.npy)
    saved_step: int = 0  # the step of the last checkpoint written or restored
    replacement: _Replacement | None = None  # a run replaced (overwrite): swapped in at the first checkpoint

    # ------------------------------------------------------------ set-up

    @classmethod
    def create(cls, cfg: Config, run: Path, device: torch.device, *, array: np.ndarray | None = None,
               held_out: np.ndarray | None = None, progress=None) -> Trainer:
        """``array``: a data file's rows given in memory; ``held_out``: the held-out rows a run
        recorded (see ``data.load_training``); ``progress``: of a training set made first."""
        ts = load_training(cfg, array=array, held_out=held_out, progress=progress)
        normalizer = ts.normalizer
        data = normalizer.encode(torch.from_numpy(ts.x).double()).to(device=device, dtype=torch.float32)
        validation = None if ts.validation is None else normalizer.encode(
            torch.from_numpy(ts.validation).double()).to(device=device, dtype=torch.float32)
        labels = None if ts.labels is None else torch.from_numpy(ts.labels).to(device)
        if labels is not None and labels.is_floating_point():  # couplings (lattice/conditioning.py)
            labels = labels.float()
        torch.manual_seed(seeding.torch_seed(cfg.train.seed))  # network initialisation
        kind = resolve_kind(cfg.data)
        coupling = conditioning_of(cfg)
        model = build_model(cfg.model, tuple(data.shape[1:]), ts.num_classes, kind, cfg.diffusion,
                            coupling=coupling).to(device)
        if hasattr(model, "fit"):  # a Gaussian part measured on the normalised training data (per coupling)
            model.fit(data, labels if coupling is not None else None)
        ema = build_model(cfg.model, tuple(data.shape[1:]), ts.num_classes, kind, cfg.diffusion,
                          coupling=coupling).to(device)
        ema.load_state_dict(model.state_dict())
        ema.requires_grad_(False)
        fused = device.type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                                      weight_decay=cfg.train.weight_decay, fused=fused)
        generator = seeding.generator(cfg.train.seed, device)
        fingerprint = data_fingerprint(ts.x, ts.labels)
        scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
        data_range = [float(ts.x.min()), float(ts.x.max())]
        return cls(cfg, run, device, data, labels, ts.class_names, normalizer, fingerprint, model, ema, optimizer,
                   generator, scaler, data_range, validation=validation, held_out=ts.held_out)

    def restore(self) -> None:
        """Load RUN/state.safetensors into this trainer (refusing a mismatched run)."""
        tensors, meta = ck.read_tensors(self.run / ck.STATE_FILE, "training state")
        if meta.get("data_fingerprint") != self.fingerprint:
            raise PhysdiffError(f"the training data differ from those of run {str(self.run)!r} "
                                "(file changed?); resume with the same data or start a new run")
        where = f"training state {str(self.run / ck.STATE_FILE)!r}"
        ck.load_module_state(self.model, tensors, where, "model.")
        ck.load_module_state(self.ema, tensors, where, "ema.")
        ck.optimizer_from_tensors(self.optimizer, tensors, meta["param_groups"])
        self.generator.set_state(tensors["rng.train"])
        if "grad_scaler" in meta and self.scaler.is_enabled():
            self.scaler.load_state_dict(json.loads(meta["grad_scaler"]))
        self.step = self.saved_step = int(meta["step"])

    # ------------------------------------------------------------ checkpoints

    def weights_metadata(self) -> dict[str, str]:
        """What the weights were trained with, checked when a run is loaded: data shape and
        range (data units), classes, the diffusion settings the network's output assumes, and
        the data it learnt: the dataset and, for a lattice theory, its parameters and L, and the
        fingerprint of the training rows (``data.data_fingerprint``, checked by evaluate)."""
        return {"format": "physdiff", "step": str(self.step),
                "data_shape": json.dumps(list(self.data.shape[1:])),
                "data_range": json.dumps(self.data_range),
                "class_names": json.dumps(list(self.class_names)),
                "diffusion": json.dumps(asdict(self.cfg.diffusion), sort_keys=True),
                "data": json.dumps({"dataset": self.cfg.data.dataset, "file": self.cfg.data.file,
                                    "theory": self.cfg.theory, "fingerprint": self.fingerprint,
                                    **self._embedding_record()}, sort_keys=True)}

    def _embedding_record(self) -> dict:
        d = self.cfg.data
        if not self.cfg.theory or d.embedding in ("none", "auto"):
            return {}
        return {"embedding": {"name": d.embedding, "shift": d.embedding_shift}}

    def save(self) -> None:
        """state.safetensors (atomic, the one --resume reads), then model and EMA weights."""
        opt_tensors, groups = ck.optimizer_to_tensors(self.optimizer)
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in self.ema.state_dict().items()}
        tensors |= opt_tensors | self.normalizer.state()
        tensors["rng.train"] = self.generator.get_state()
        meta = self.weights_metadata() | {"param_groups": groups, "data_fingerprint": self.fingerprint}
        if self.scaler.is_enabled():
            meta["grad_scaler"] = json.dumps(self.scaler.state_dict())
        ck.atomic_save_tensors(self.run / ck.STATE_FILE, tensors, meta)
        for name, module in ((ck.MODEL_FILE, self.model), (ck.EMA_FILE, self.ema)):
            ck.atomic_save_tensors(self.run / name, module.state_dict() | self.normalizer.state(),
                                   self.weights_metadata())
        self.saved_step = self.step
        if self.replacement is not None:  # the new run has weights: only now does it take the old one's place
            self.run = self.replacement.swap()
            self.replacement = None

    # ------------------------------------------------------------ the loop

    def validation_loss(self, objective: DenoisingLoss) -> float:
        """The training objective of the network being trained (raw weights, as the loss column)
        on the held-out rows, averaged over VALIDATION_ROWS rows (the rows repeated, or the first
        of them: a uniform subset) whose t and noise come from one generator seeded alike at every
        call: the curve moves only with the weights, never with fresh draws."""
        x = self.validation
        x = x.repeat(-(-VALIDATION_ROWS // len(x)), *([1] * (x.dim() - 1)))[:VALIDATION_ROWS]
        generator = seeding.generator(VALIDATION_SEED, self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return float(objective(self.model, x, None, generator).mean())
        finally:
            self.model.train(was_training)

    def train(self, progress=None) -> dict[str, float]:
        """Train from ``self.step`` to ``train.steps``, writing metrics and checkpoints; returns the
        last logged metrics. ``progress``: ``progress.py`` (its bar counts steps; rank 0 only)."""
        cfg = self.cfg.train
        n = self.data.shape[0]
        params = [p for p in self.model.parameters()]
        ema_params = [p for p in self.ema.parameters()]
        net, objective, (lo, hi) = self._parallel_net_and_objective()
        main = dist.is_main()
        columns = metrics_header(self.validation is not None).split(",")
        loss_sum = torch.zeros((), device=self.device)
        grad_sum = torch.zeros((), device=self.device)
        first_bad = torch.full((), -1, device=self.device, dtype=torch.long)
        window_start, window_steps, t0 = time.perf_counter(), 0, time.perf_counter()
        last = {}
        with contextlib.ExitStack() as stack:  # the bar and the metrics file, closed whatever happens
            metrics = stack.enter_context(open(self.run / ck.METRICS_FILE, "a", encoding="utf-8")) if main else None
            bar = stack.enter_context(progress_bar(progress if main else False, cfg.steps, "train", "step",
                                                   initial=self.step))
            while self.step < cfg.steps:
                lr = lr_at(self.step, cfg)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss, grad_norm, finite = self._step(net, objective, params, ema_params, n, (lo, hi))
                first_bad = torch.where(~finite & (first_bad < 0), self.step, first_bad)
                loss_sum += loss.detach()
                grad_sum += grad_norm.detach()
                self.step += 1
                window_steps += 1
                bar.update(1)
                at_log = self.step % cfg.log_every == 0 or self.step == cfg.steps
                at_ckpt = self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps
                if at_log or at_ckpt:
                    self._check_finite(dist.all_reduce_max(first_bad))
                if at_log:
                    now = time.perf_counter()
                    dist.all_reduce_mean(loss_sum)
                    last = {"step": self.step, "loss": float(loss_sum) / window_steps, "lr": lr,
                            "grad_norm": float(grad_sum) / window_steps,
                            "steps_per_s": window_steps / max(now - window_start, 1e-9),
                            "elapsed_s": now - t0}
                    if main and self.validation is not None:
                        last[VALIDATION_COLUMN] = self.validation_loss(objective)
                    if main:
                        metrics.write(",".join(f"{last[k]:.6g}" if isinstance(last[k], float) else str(last[k])
                                               for k in columns) + "\n")
                        metrics.flush()
                    bar.set_postfix(loss=f"{last['loss']:.4f}")
                    loss_sum.zero_()
                    grad_sum.zero_()
                    window_start, window_steps = now, 0
                if at_ckpt and main:
                    self.save()
        return last

    def _parallel_net_and_objective(self):
        """(the network as trained: wrapped for data parallelism and compiled as asked, the
        ε-/x₀-/v-loss with the data kind's augmentation, this rank's slice of every batch)."""
        cfg, d = self.cfg.train, self.cfg.diffusion
        sched = make_schedule(d.schedule, d.timesteps, warn=False).to(self.device)
        # Data parallel: every rank draws the same global batch from the same generator and
        # keeps its slice, so W processes compute what one process does at the same global batch.
        world = dist.group_size()
        if cfg.batch_size % world:
            raise PhysdiffError(f"train.batch_size = {cfg.batch_size} must be a multiple of the number of "
                                f"processes ({world})")
        lo, hi = dist.shard(cfg.batch_size)
        net = self.model
        if world > 1:
            net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[self.device] if self.device.type
                                                            == "cuda" else None)
        if cfg.compile:
            net = torch.compile(net)
        amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
        augment = resolve_kind(self.cfg.data).augmentation(self.cfg)
        # classifier-free guidance drops class labels for the null label K; a coupling-conditioned run's
        # couplings have no null label and are never dropped
        null = len(self.class_names) if self.class_names else None
        objective = DenoisingLoss(sched, d.prediction, d.loss, d.variance, cfg.label_dropout, null,
                                  augment=augment, amp_dtype=amp_dtype)
        return net, objective, (lo, hi)

    def _step(self, net, objective, params, ema_params, n: int, rows) -> tuple:
        """One optimisation step on a batch of index draws (the learning rate already set): the
        loss (mean of the per-example losses), clipping, the optimiser and the EMA update.
        Returns (loss, gradient norm, whether both are finite) as tensors: no host sync."""
        cfg = self.cfg.train
        idx = torch.randint(n, (cfg.batch_size,), generator=self.generator, device=self.device)
        labels = None if self.labels is None else self.labels[idx]
        loss = objective(net, self.data[idx], labels, self.generator, rows).mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if cfg.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
        else:
            grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        # divergence guard: remember the first step whose loss or gradient is not finite
        # (with fp16 an infinite gradient is an overflow the scaler skips, not a divergence)
        finite = torch.isfinite(loss) if self.scaler.is_enabled() else torch.isfinite(loss) & torch.isfinite(
            grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if cfg.ema_decay > 0:
            decay = min(cfg.ema_decay, (1 + self.step) / (10 + self.step))
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        else:
            torch._foreach_copy_(ema_params, params)
        return loss, grad_norm, finite

    def _check_finite(self, first_bad: torch.Tensor):
        bad_step = int(first_bad)
        if bad_step >= 0:
            kept = ("the last good checkpoint is kept" if (self.run / ck.STATE_FILE).is_file()
                    else "no checkpoint had been written, so the new run is removed and the run it was to replace "
                    "is kept" if self.replacement is not None
                    else "no checkpoint had been written, so the run is removed")
            raise PhysdiffError(f"training diverged: non-finite loss or gradient at step {bad_step + 1}; {kept}. "
                                "Lower train.lr or set train.grad_clip")


def _truncate_metrics(path: Path, step: int, header: str = METRICS_HEADER) -> None:
    """Keep the header and rows with step ≤ ``step`` (rows written after the checkpoint go)."""
    if not path.exists():
        ck.atomic_write_bytes(path, (header + "\n").encode())
        return
    # unreadable bytes (a corrupt file) become U+FFFD, and their lines are dropped below
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    keep = [header]
    for line in lines[1:]:
        parts = line.split(",")
        if len(parts) == len(header.split(",")) and parts[0].isdigit() and int(parts[0]) <= step:
            keep.append(line)
    ck.atomic_write_bytes(path, ("\n".join(keep) + "\n").encode())


def is_physdiff_run(out: Path) -> bool:
    """Whether folder ``out`` is a run that physdiff's train made: it holds the marker
    (physdiff-run.json), or, for runs written before the marker, a config.toml that parses as a
    physdiff config together with a metrics.csv that starts with physdiff's header."""
    if ck.has_marker(out):
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_config(out / ck.CONFIG_FILE)
        with open(out / ck.METRICS_FILE, encoding="utf-8") as fh:
            return fh.readline().rstrip("\n") in (metrics_header(False), metrics_header(True))
    except (PhysdiffError, OSError, UnicodeDecodeError):
        return False


def check_run_target(out: Path, *, overwrite: bool) -> bool:
    """Refuse a run directory that a new run may not be written into; deletes nothing. Returns
    True when ``out`` holds a physdiff run that ``overwrite`` will replace once the new run has
    its first checkpoint (:func:`_start_run`). Only a physdiff run (:func:`is_physdiff_run`) that holds nothing
    but physdiff's own files (``checkpoint.is_run_file``) is ever replaced."""
    if out.exists() and not out.is_dir():
        raise PhysdiffError(f"{str(out)!r} is a file, not a run directory")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if not overwrite:
        raise PhysdiffError(f"run directory {str(out)!r} already exists; resume it, allow overwriting "
                            "it, or choose another run directory")
    if not is_physdiff_run(out):
        raise PhysdiffError(f"refusing to overwrite {str(out)!r}: it is not a physdiff run (no {ck.MARKER_FILE}, "
                            f"nor a physdiff {ck.CONFIG_FILE} with its {ck.METRICS_FILE}); nothing was changed")
    foreign = ck.foreign_entries(out)
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise PhysdiffError(f"refusing to overwrite run {str(out)!r}: it also holds {shown}, which physdiff did not "
                            "write; move them out of the run first, or choose another run directory")
    real, cwd = out.resolve(), Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise PhysdiffError(f"refusing to overwrite run {str(out)!r}: it is (or holds) the current folder; "
                            "run the command from outside it")
    with ck.RunLock(out):
        pass  # refuse to replace a run another process is training
    return True


def _write_first_files(run: Path, cfg: Config, header: str = METRICS_HEADER, extra: dict | None = None) -> None:
    """Marker, metrics header, ``extra`` ({file name: bytes}: the held-out rows, data given in
    memory) and, last, config.toml, which names them."""
    ck.write_marker(run)
    source = theory_source(cfg.data.dataset) if cfg.theory else None
    if source is not None:  # a user's theory file: later commands must load the same one
        ck.atomic_write_bytes(run / ck.THEORY_FILE, (json.dumps(source) + "\n").encode())
    ck.atomic_write_bytes(run / ck.METRICS_FILE, (header + "\n").encode())
    for name, data in (extra or {}).items():
        ck.atomic_write_bytes(run / name, data)
    ck.atomic_write_bytes(run / ck.CONFIG_FILE, dump_config(cfg).encode())


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array))
    return buf.getvalue()


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Replacement:
    """A new run written beside the physdiff run it replaces (``overwrite``), in a temporary
    sibling folder ``new``, while the old run stays in place, whole and locked (no other process
    starts on it meanwhile): :meth:`swap`, called once the new run has its first checkpoint, puts
    it in the old one's place by two renames and only then removes the old run's files; before
    that a failure, a Ctrl-C or a SIGTERM (:meth:`abort`) removes the new run and leaves the old
    one as it was. A kill -9 leaves the old run in place and the hidden ``new`` folder beside it,
    which the next train into that run directory removes (:func:`_clear_leftovers`)."""

    def __init__(self, real: Path, new: Path):
        self.real, self.new = real, new
        self.old_lock = ck.RunLock(real).acquire()

    def swap(self) -> Path:
        old = Path(tempfile.mkdtemp(dir=self.real.parent, prefix=f".{self.real.name[:100]}.old-"))
        try:
            os.rename(self.real, old)  # replaces the empty placeholder
            try:
                os.rename(self.new, self.real)
            except BaseException:
                os.rename(old, self.real)
                raise
        except BaseException:
            with contextlib.suppress(OSError):
                old.rmdir()
            raise
        _fsync_folder(self.real.parent)
        ck.remove_run_files(old)
        self.old_lock.release()
        return self.real

    def abort(self) -> None:
        ck.remove_run_files(self.new)
        self.old_lock.release()


def _clear_leftovers(real: Path) -> None:
    """The hidden sibling folders a kill -9 left while replacing the run ``real`` (``.NAME.new-*``,
    a new run that never got its first checkpoint; ``.NAME.old-*``, an old run already replaced)
    are removed, their physdiff files only (a folder holding anything else stays), unless another
    process holds them; an ``.old-`` folder only when a run is in ``real``'s place."""
    for kind in ("new", "old"):
        if kind == "old" and not real.is_dir():
            continue
        for folder in real.parent.glob(f".{glob.escape(real.name[:100])}.{kind}-*"):
            if not folder.is_dir() or folder.is_symlink() or ck.foreign_entries(folder):
                continue
            try:
                with ck.RunLock(folder):  # refused while a process trains there
                    ck.remove_run_files(folder, remove_folder=False)
            except (PhysdiffError, OSError):
                continue
            with contextlib.suppress(OSError):
                folder.rmdir()


def _start_run(out: Path, cfg: Config, replacing: bool, header: str = METRICS_HEADER,
               extra: dict | None = None) -> tuple[ck.RunLock, _Replacement | None]:
    """Write a new run's first files (marker, metrics header, config) and return its lock, held, and
    the pending replacement (None when ``out`` held no run). ``replacing`` an old physdiff run
    there: the new run is written beside it in a temporary sibling folder, and takes the old one's
    place only once it has weights (:class:`_Replacement`); until then the old run is untouched."""
    real = out.resolve() if out.exists() else out
    with contextlib.suppress(OSError):
        _clear_leftovers(real)
    if not replacing:
        out.mkdir(parents=True, exist_ok=True)
        lock = ck.RunLock(out).acquire()
        try:
            _write_first_files(out, cfg, header, extra)
        except BaseException:
            lock.release()
            raise
        return lock, None
    new = Path(tempfile.mkdtemp(dir=real.parent, prefix=f".{real.name[:100]}.new-"))
    lock = ck.RunLock(new).acquire()
    try:
        os.chmod(new, 0o777 & ~ck._umask())  # as mkdir would make it (mkdtemp makes 0700)
        replacement = _Replacement(real, new)  # the old run locked until the swap
        try:
            _write_first_files(new, cfg, header, extra)
        except BaseException:
            replacement.old_lock.release()
            raise
    except BaseException:
        lock.release()
        ck.remove_run_files(new)
        raise
    return lock, replacement


def _check_resumable(out: Path) -> bool:
    """Whether run ``out`` has a checkpoint to continue from; False for a run stopped before its
    first checkpoint (config and metrics only), which starts again from step 0. Refuses a folder
    that is not a run, and a run whose weights have no training state."""
    if not (out / ck.CONFIG_FILE).is_file():
        raise PhysdiffError(f"cannot resume {str(out)!r}: it is not a physdiff run (no config.toml)")
    if (out / ck.STATE_FILE).is_file():
        return True
    if (out / ck.MODEL_FILE).exists() or (out / ck.EMA_FILE).exists():
        raise PhysdiffError(f"cannot resume {str(out)!r}: it has no training state ({ck.STATE_FILE}); resuming "
                            "would retrain from step 0 over its weights. Start a new run instead")
    if not is_physdiff_run(out):
        raise PhysdiffError(f"cannot resume {str(out)!r}: it has no training state ({ck.STATE_FILE}) and is not a "
                            f"run that physdiff's train started (no {ck.MARKER_FILE}, no physdiff {ck.METRICS_FILE}); "
                            f"start a new run from its config {str(out / ck.CONFIG_FILE)!r} (load_config; on the "
                            "command line --config)")
    return False


def _open_session(trainer: Trainer, device: torch.device, resume: bool) -> tuple[list[dict], dict]:
    """(earlier sessions, this one) of RUN/provenance.json, this session written there as
    running: a resumed run keeps every earlier session (one whose process died before it could
    record its end is marked unfinished)."""
    earlier = ck.read_provenance(trainer.run) if resume else []
    for s in earlier:
        if s.get("status") == "running":  # we hold the run's lock: no process is training it now
            s["status"] = "unfinished"
    session = current().record(device) | {"ended": None, "status": "running",
                                          "step": {"start": trainer.step, "end": None}}
    ck.write_provenance(trainer.run, [*earlier, session])
    return earlier, session


def _close_session(trainer: Trainer, earlier: list[dict], session: dict, error: BaseException | None = None) -> None:
    """This session's end in RUN/provenance.json: the time, the step of the last checkpoint (the
    one the run holds) and the status: completed, interrupted, or failed with its error."""
    status = "completed" if error is None else "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
    session |= {"ended": utc_now(), "status": status}
    session["step"]["end"] = trainer.saved_step
    if status == "failed":
        session["error"] = " ".join(str(error).splitlines()) or type(error).__name__
    ck.write_provenance(trainer.run, [*earlier, session])


@recorded
def _train_recorded(trainer: Trainer, device, resume: bool, main: bool, progress) -> None:
    """``trainer.train`` inside a session of RUN/provenance.json (rank 0 records it), closed with
    how it ended, the training's own error included."""
    sessions = _open_session(trainer, device, resume) if main else None
    dist.barrier()
    try:
        trainer.train(progress=progress)
    except BaseException as exc:
        if sessions is not None and trainer.run.is_dir():
            with contextlib.suppress(OSError):  # the training's own error is the one to report
                _close_session(trainer, *sessions, exc)
        raise
    if sessions is not None:
        _close_session(trainer, *sessions)


def _resolved_config(cfg: Config | None, out: Path, data, resume: bool, steps: int | None):
    """(the config a training into ``out`` runs with, every ``auto`` resolved; the data array
    given in memory or None; whether a resumed run has a checkpoint to restore), as :func:`train`
    reads its arguments."""
    has_state = False
    array = None
    if data is not None:
        if resume:
            raise PhysdiffError("resume continues a run with its own data; give no data")
        if isinstance(data, str | os.PathLike):
            file = str(data)
        else:
            array = check_array(data, "the data array")  # float64: RUN/data.npy holds exactly what was learnt
            file = str(out.expanduser().resolve() / ck.DATA_FILE)
        cfg = (cfg or Config()).with_overrides({"data.file": file, "data.kind": "auto"})
    if resume:
        has_state = _check_resumable(out)
        cfg = load_config(out / ck.CONFIG_FILE)
        if steps is not None:
            cfg = cfg.with_overrides({"train.steps": steps})
    elif cfg is None:
        cfg = Config()
    if not resume and cfg.data.file and array is None:  # record the data file so that the run works from any folder
        cfg = replace(cfg, data=replace(cfg.data, file=str(Path(cfg.data.file).expanduser().resolve())))
    cfg = resolve_auto(cfg)  # config.toml says what every `auto` meant when the run was made
    return cfg, array, has_state


def train(cfg: Config | None, out: str | Path, *, data: str | Path | np.ndarray | None = None, resume: bool = False,
          overwrite: bool = False, progress=None, steps: int | None = None) -> Path:
    """Train a model as ``cfg`` (None: the defaults) says into run directory ``out`` and return its path.

    ``data``: a user's data instead of ``cfg``'s: the path of a (N, D) .npy or .csv file (as
    ``data.file``), or a (N, D) array in memory, which is saved as RUN/data.npy (float64, with
    the run's first files) and named by ``data.file`` in config.toml, so the run records what it
    learnt. A data file's run holds ``data.validation_fraction`` of the rows out of training
    (drawn by ``data.seed``; their row numbers in RUN/validation.npy), logs the validation loss
    in metrics.csv and is evaluated against them.

    ``resume=True`` continues ``out`` from its last checkpoint (its own config.toml is used and
    ``cfg`` is ignored; ``steps`` may extend it); a run stopped before its first checkpoint starts
    again from step 0. The result of a resumed run is bitwise identical to an
    uninterrupted one on the same machine. ``overwrite=True`` replaces a physdiff run in ``out``
    (never a folder that is not one, never a file physdiff did not write), and only once the new
    run has its first checkpoint: until then it is trained in a hidden folder beside the old one,
    and an error, Ctrl-C or SIGTERM before it leaves the old run as it was. Launched by ``torchrun`` with several
    processes it trains data-parallel (DistributedDataParallel); only rank 0 writes.

    ``progress``: of the training steps and of a Monte Carlo training set made first
    (``progress.py``). RUN/provenance.json records each session (``provenance.py``): what trained
    the run, from which step to which, when, and how it ended.
    """
    out = Path(out)
    cfg, array, has_state = _resolved_config(cfg, out, data, resume, steps)
    device, created = dist.init(resolve_device(cfg.train.device))  # several processes under torchrun
    made_here = new_folder = False
    replacement = None
    try:
        replacing = False
        if not resume and dist.is_main():
            replacing = check_run_target(out, overwrite=overwrite)  # refuses; deletes nothing
        dist.barrier()
        make_schedule(cfg.diffusion.schedule, cfg.diffusion.timesteps)  # warn early on a weak schedule
        # reads and checks the data before anything is written
        trainer = Trainer.create(cfg, out, device, array=array,
                                 held_out=ck.recorded_held_out(out, cfg) if resume else None, progress=progress)
        header = metrics_header(trainer.validation is not None)
        main = dist.is_main()
        lock = None
        if main and not resume:
            new_folder = not out.exists()
            extra = {} if trainer.held_out is None else {ck.VALIDATION_FILE: _npy_bytes(trainer.held_out)}
            if array is not None:
                extra[ck.DATA_FILE] = _npy_bytes(array)
            # an old run (if any) is replaced at the new one's first checkpoint (Trainer.save), not here
            lock, replacement = _start_run(out, cfg, replacing, header, extra)
            trainer.run, trainer.replacement = (out, None) if replacement is None else (replacement.new, replacement)
            made_here = replacement is None
        elif main:
            lock = ck.RunLock(out).acquire()
        try:
            if resume and main:
                ck.clear_stale_temporaries(out)
            if has_state:
                trainer.restore()
                if trainer.step >= cfg.train.steps:
                    raise PhysdiffError(f"run {str(out)!r} is already at step {trainer.step}; train.steps = "
                                        f"{cfg.train.steps} would train nothing (give more steps to extend it)")
            if resume and main:
                _truncate_metrics(out / ck.METRICS_FILE, trainer.step, header)
                ck.atomic_write_bytes(out / ck.CONFIG_FILE, dump_config(cfg).encode())
                if not ck.has_marker(out):
                    ck.write_marker(out)
            _train_recorded(trainer, device, resume, main, progress)
        finally:
            if lock is not None:
                lock.release()
        dist.barrier()
    except BaseException:
        # a run that failed before its first checkpoint leaves nothing behind (a config without
        # weights is not a run); one with a checkpoint keeps it for --resume. Only physdiff's own
        # files are removed, and the folder only if this call created it. A run that was to replace
        # another and has no checkpoint yet is removed, and the old run stays as it was.
        if replacement is not None and trainer.replacement is not None:
            replacement.abort()
        elif made_here and dist.is_main() and out.is_dir() and not (out / ck.STATE_FILE).is_file():
            ck.remove_run_files(out, remove_folder=new_folder)
        raise
    finally:
        dist.finish(created)
    return out
