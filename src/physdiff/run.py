"""A trained run, loaded for sampling: config, network, normaliser and schedule together."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import checkpoint as ck
from . import distill
from . import samplers as smp
from .config import load_config, resolve_auto
from .data import Normalizer, resolve_kind
from .devices import resolve_device
from .errors import PhysdiffError
from .nets import build_model
from .progress import progress_bar
from .samplers import GuidedModel, IndexedNoise, SamplerResult, ddim_invert, randn_like, run_sampler
from .schedule import make_schedule

NOISE_BLOCK = 64  # samples per noise generator; see IndexedNoise
OUTLIER_MARGIN = 1.0  # far outlier: beyond the data's range widened by this many widths on each side


class OutlierWarning(UserWarning):
    """Samples far outside the training data's range."""


DEFAULT_GUIDANCE = 0.5  # classifier-free guidance w for class-conditional runs (benchmarks/README.md)


def resolve_guidance(guidance: float | None) -> float:
    """The guidance w to use: ``guidance``, or DEFAULT_GUIDANCE when None."""
    return DEFAULT_GUIDANCE if guidance is None else guidance


@dataclass(frozen=True, eq=False)
class SampleResult:
    """What :meth:`LoadedRun.sample` returns.

    samples: (n, *data_shape) float32, data units (after the data kind's post-processing);
    log_prob: (n,) float64 nats in data units, the exact log-density of the distribution the
    samples were drawn from (only from a sampler that declares ``exact_density``, asked with
    ``log_prob=True``), else None; nfe: network evaluations per sample batch (the largest over
    the batches; the same for every batch of a fixed-step sampler); snapshots: {paper step t:
    (n, *data_shape) network units}, t = T the starting noise; sampler: the sampler's name;
    options: the options it ran with (defaults filled in); guidance: the classifier-free w of a
    class-conditional run (None for an unconditional one)."""

    samples: np.ndarray
    log_prob: np.ndarray | None
    nfe: int
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    sampler: str = ""
    options: dict = field(default_factory=dict)
    guidance: float | None = None


MAX_SPECTRUM_CONFIGURATIONS = 1_000_000  # on_lattice: Monte Carlo configurations of one spectrum, at most


def check_density(run, what: str) -> None:
    """A density exists only for samples that the model's continuous law describes: refused for a
    discrete theory (Ising), whose written samples are spins (a continuous model's signs, or
    spins drawn given its continuous embedding)."""
    if run.theory is not None and run.theory.discrete is not None:
        raise PhysdiffError(f"{what} is not available for {run.theory.title or run.theory.name} runs: a "
                            "continuous model read through the sign of its samples has no density on the spins; "
                            "compare its raw observables with the reference Monte Carlo")


class LoadedRun:
    """A run directory ready to sample from.

    ``weights``: "ema" (default, the averaged weights) or "model" (the raw ones). ``device``:
    "auto" (default, as the CLI: cuda when a GPU is present, else cpu), "cpu", "cuda" or a
    torch.device.
    Attributes: cfg (every ``auto`` resolved), kind (the DataKind of ``data/kinds.py``), theory
    (the lattice theory of a lattice run, else None), embedding (the continuous variable the model
    of a lattice run with spins learnt, ``lattice/embedding.py``; else None), model (eval mode, on ``device``),
    normalizer, schedule, data_shape, step, class_names (empty for an unconditional run),
    num_classes.
    """

    def __init__(self, run: str | Path, *, weights: str = "ema", device: str | torch.device = "auto"):
        self.path = Path(run)
        if not (self.path / ck.CONFIG_FILE).is_file():
            raise PhysdiffError(f"{str(self.path)!r} is not a physdiff run (no {ck.CONFIG_FILE}); "
                                "give the run directory that training wrote")
        if weights not in ("ema", "model"):
            raise PhysdiffError(f"unknown weights {weights!r}; allowed: ema, model")
        if (self.path / ck.THEORY_FILE).is_file():  # a user's theory file made it: that theory, that file
            from .lattice.theory import check_theory_source

            source = ck.read_json(self.path / ck.THEORY_FILE, "the run's theory record")
            check_theory_source(source, f"run {str(self.path)!r}")
        self.cfg = resolve_auto(load_config(self.path / ck.CONFIG_FILE))  # a run of before version 4 may say auto
        self.weights = weights
        file = self.path / (ck.EMA_FILE if weights == "ema" else ck.MODEL_FILE)
        tensors, meta = ck.read_tensors(file, "weights file")
        try:
            self.data_shape = tuple(json.loads(meta["data_shape"]))
            self.step = int(meta.get("step", 0))
            self.normalizer = Normalizer.from_state(tensors)
            self.class_names = tuple(json.loads(meta.get("class_names", "[]")))
            self.data_range = json.loads(meta["data_range"]) if "data_range" in meta else None
            trained = json.loads(meta["diffusion"]) if "diffusion" in meta else None
            learnt = json.loads(meta["data"]) if "data" in meta else None
        except (KeyError, ValueError, TypeError):
            raise PhysdiffError(f"weights file {str(file)!r} lacks physdiff metadata; it was not "
                                "written by physdiff train") from None
        d = self.cfg.diffusion
        if trained is not None:  # runs written before the key was stored are not checked
            for key in ("timesteps", "schedule", "prediction"):
                if trained.get(key) != getattr(d, key):
                    raise PhysdiffError(f"{str(self.path / ck.CONFIG_FILE)!r} says diffusion.{key} = "
                                        f"{getattr(d, key)!r} but the weights were trained with {trained.get(key)!r}; "
                                        "restore the run's config.toml")
        if learnt is not None:  # runs written before the key was stored are not checked
            now = {"dataset": self.cfg.data.dataset, "file": self.cfg.data.file, "theory": self.cfg.theory}
            d_ = self.cfg.data
            now["embedding"] = ({"name": d_.embedding, "shift": d_.embedding_shift}
                                if self.cfg.theory and d_.embedding not in ("none", "auto") else None)
            for key in ("dataset", "theory", "embedding"):
                if learnt.get(key) != now[key]:
                    raise PhysdiffError(f"{str(self.path / ck.CONFIG_FILE)!r} says {key} = {now[key]!r} but the "
                                        f"weights were trained on {learnt.get(key)!r}; restore the run's config.toml")
        self.learnt = learnt  # what the weights record of their data (None for runs before the record)
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise PhysdiffError(f"weights file {str(file)!r} holds non-finite values (in {bad[0]}); "
                                "restore it from a good copy or retrain")
        if isinstance(device, str) and device in ("auto", "cpu", "cuda"):
            device = resolve_device(device)  # cuda without a GPU: a PhysdiffError, as in the CLI
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise PhysdiffError(f"unknown device {device!r}; allowed: auto, cpu, cuda (or a torch.device)") from None
        self.num_classes = len(self.class_names)
        self.kind = resolve_kind(self.cfg.data)
        self.is_image = self.kind.images
        self.theory = self.kind.theory(self.cfg)  # the lattice theory (None for other data)
        # the continuous embedding the model learnt (lattice spins), else None
        self.embedding = self.kind.embedding(self.cfg) if self.theory is not None else None
        self._warned = self._warned_outliers = False
        from .lattice.conditioning import conditioning_of

        # a coupling-conditioned run (lattice/conditioning.py): the network needs a coupling, given by .at(c);
        # until then self.theory is the range's centre (for its name and checks) but nothing is sampled
        self.conditioning = conditioning_of(self.cfg)
        self.coupling = None
        self.model = build_model(self.cfg.model, self.data_shape, self.num_classes, self.kind, d,
                                 coupling=self.conditioning)
        weights_only = {k: v for k, v in tensors.items() if not k.startswith("normalizer.")}
        ck.load_module_state(self.model, weights_only, f"weights file {str(file)!r}")
        self.model.to(self.device).eval().requires_grad_(False)
        self.schedule = make_schedule(d.schedule, d.timesteps, warn=False)

    def coupling_option(self) -> str | None:
        """The command-line name of the coupling a coupling-conditioned run is conditioned on
        (``--kappa``'s "kappa"); None for any other run."""
        from .config import theory_fields

        if self.conditioning is None:
            return None
        return next(k for k, (key, _) in theory_fields().items() if key == f"theory.{self.conditioning.name}")

    def at(self, value: float) -> LoadedRun:
        """This coupling-conditioned run at coupling ``value`` of its trained range (refused
        outside it, with the range): a view sharing the network, whose theory, embedding,
        read-out and samples are those of that coupling. The run itself is unchanged."""
        import copy

        from .lattice.conditioning import config_at

        if self.conditioning is None:
            raise PhysdiffError(f"run {str(self.path)!r} is not conditioned on a coupling: it was trained at one "
                                "and samples that one")
        value = self.conditioning.check(value)
        view = copy.copy(self)
        view.cfg = config_at(self.cfg, value)
        view.coupling = value
        view.theory = view.kind.theory(view.cfg)
        view.embedding = view.kind.embedding(view.cfg)
        return view

    def on_lattice(self, L: int, *, configurations: int = 1024, seed: int | None = None) -> LoadedRun:
        """This run's network on an L×L lattice other than the one it was trained on: a view with
        a network of its own (the run is unchanged), whose theory, embedding, data shape and samples
        are those of size L. The local network (``model.arch = local``) is the same function at every size
        (periodic convolutions and the zero mode), so its weights carry over; the Gaussian part's
        power spectrum belongs to the lattice size and is measured again from ``configurations``
        Monte Carlo configurations of the run's theory at L (from ``seed``, default the run's
        data seed; cached as training sets are). The exact sampler (``--metropolis``) accepts
        with the view's own log q, so it stays exact at L: the transfer costs acceptance, never
        correctness."""
        import copy
        import dataclasses

        from .lattice.theory import check_lattice_size
        from .nets.local import LocalNet

        if self.theory is None:
            raise PhysdiffError(f"run {str(self.path)!r} is not a lattice run: it has no lattice size to change")
        if self.conditioning is not None:
            raise PhysdiffError(f"run {str(self.path)!r} is conditioned on {self.conditioning.name}: another lattice "
                                "size is for a run trained at one coupling")
        if not any(isinstance(m, LocalNet) for m in self.model.modules()):
            raise PhysdiffError(f"run {str(self.path)!r} has model.arch = {self.cfg.model.arch!r}: only the local "
                                "network (model.arch = local) is the same at every lattice size")
        check_lattice_size("lattice size", L)  # the bounds of every lattice (MAX_L), then the network's own
        if L < 4:
            raise PhysdiffError(f"lattice size {L!r} is not allowed; allowed: an integer >= 4")
        if isinstance(configurations, bool) or not isinstance(configurations, int) \
                or not 32 <= configurations <= MAX_SPECTRUM_CONFIGURATIONS:
            raise PhysdiffError(f"{configurations!r} configurations cannot measure a power spectrum; allowed: an "
                                f"integer >= 32 and <= {MAX_SPECTRUM_CONFIGURATIONS}")
        cfg = dataclasses.replace(self.cfg, theory={**self.cfg.theory, "L": L})
        view = copy.copy(self)
        view.cfg, view.data_shape = cfg, (*self.data_shape[:-2], L, L)
        view.theory, view.embedding = self.kind.theory(cfg), self.kind.embedding(cfg)
        model = build_model(cfg.model, view.data_shape, self.num_classes, self.kind, cfg.diffusion)
        missing, unexpected = model.load_state_dict(
            {k: v for k, v in self.model.state_dict().items() if k.rsplit(".", 1)[-1] != "power"}, strict=False)
        if unexpected or any(k.rsplit(".", 1)[-1] != "power" for k in missing):
            raise PhysdiffError(f"run {str(self.path)!r}: its network does not carry over to L = {L} "
                                f"(missing {missing}, unexpected {unexpected})")
        if hasattr(model, "fit"):  # the Gaussian part: the spectrum of the normalised fields at L
            x = self.kind.training_fields(cfg, configurations, cfg.data.seed if seed is None else seed)
            model.fit(self.normalizer.encode(torch.from_numpy(x).double()).float())
        view.model = model.to(self.device).eval().requires_grad_(False)
        view.__dict__.pop("_students", None)  # students belong to the lattice size they were distilled at
        return view

    @property
    def file_tag(self) -> str:
        """The suffix of the report and figures that evaluate and plot write into the run: '' for
        a run trained at one coupling, '_kappa0.2705' for a coupling-conditioned run put at κ =
        0.2705 by :meth:`at`, so that each coupling keeps its own files."""
        if self.conditioning is None or self.coupling is None:
            return ""
        return f"_{self.conditioning.name}{self.coupling:.6g}"

    def cond_input(self, count: int, cond=None):
        """``cond`` as given, or the coupling of a conditioned run for ``count`` samples (refused
        for a conditioned run not yet put at a coupling by :meth:`at`: no silent default)."""
        if cond is not None or self.conditioning is None:
            return cond
        if self.coupling is None:
            c = self.conditioning
            raise PhysdiffError(f"run {str(self.path)!r} is conditioned on {c.name} in [{c.lo:g}, {c.hi:g}]: choose "
                                f"the coupling first, run.at({c.name} value) (on the command line --{c.name} VALUE)")
        return torch.full((count,), float(self.coupling), device=self.device, dtype=torch.float64)

    def denoiser(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        """The network as a model callable for any input dtype (it runs in float32)."""
        return _float32(self.model)(x, t, self.cond_input(x.shape[0], cond))

    def labels(self, indices: np.ndarray, classes=None) -> np.ndarray | None:
        """Labels of sample indices: None for an unconditional run; ``classes`` None → i mod K
        (balanced), an int k → all k, a sequence → one per index (indexed from ``indices[0]``)."""
        if not self.num_classes:
            if classes is not None:
                raise PhysdiffError("this run was trained without class labels; ask for no class")
            return None
        if classes is None:
            return indices % self.num_classes
        if np.ndim(classes) == 0:
            arr = np.full(indices.shape, int(classes), dtype=np.int64)
        else:
            arr = np.asarray(classes, dtype=np.int64)[indices - indices[0]]
        if arr.size and (arr.min() < 0 or arr.max() >= self.num_classes):
            raise PhysdiffError(f"class {int(arr.min() if arr.min() < 0 else arr.max())} is out of range; "
                                f"this run has classes 0..{self.num_classes - 1} ({', '.join(self.class_names)})")
        return arr

    def default_sampler(self, guidance: float | None = None) -> dict:
        """The sampler options of this run's data kind (steps at most T), with ``guidance``."""
        opts = dict(self.kind.sampler)
        if "steps" in opts:
            opts["steps"] = min(opts["steps"], self.schedule.T)
        return opts | {"guidance": guidance}

    def sample(self, n: int, seed: int, *, batch_size: int | None = None, start: int = 0,
               snapshot_steps: tuple[int, ...] = (), sampler: str | None = None, classes=None,
               guidance: float | None = None, log_prob: bool = False, continuous: bool = False,
               progress=None, **options) -> SampleResult:
        """n samples for sample indices start..start+n-1, as a :class:`SampleResult` (samples in
        data units, (n, *data_shape) float32; log_prob; nfe; snapshots; the sampler and options).

        Sample i depends only on (seed, i): noise comes from IndexedNoise blocks, so neither
        ``batch_size`` nor how the indices are split changes it. ``sampler``: a name registered
        in ``samplers.SAMPLERS`` (None: the data kind's default, with its options), ``options``:
        that sampler's options (steps, spacing, eta, ...). ``classes`` (class-conditional runs):
        see :meth:`labels`; ``guidance``: the classifier-free guidance w (None: DEFAULT_GUIDANCE).
        ``snapshot_steps``: paper steps after which the state is kept (network units), returned
        as {t: (n, *data_shape)}; t = T means x_T. ``log_prob``: also the exact log-density of
        each sample in data units (n,) float64, for a sampler whose spec declares
        ``exact_density`` (``samplers.density_sampler()`` gives the default one). ``continuous``:
        the model's own variable, without the read-out to the theory's field (a lattice run's
        continuous embedding, whose density log_prob is). ``progress``: a bar counting samples,
        advanced once per batch (``progress.py``). Nothing is kept on the run. ``seed``: an integer
        from 0 to 2⁶³ − 1 (``seeding.check_seed``).
        """
        from .seeding import check_seed

        seed = check_seed(seed)
        if sampler is None:
            defaults = self.default_sampler()
            sampler = defaults.pop("sampler")
            options = {k: v for k, v in defaults.items() if k != "guidance"} | {
                k: v for k, v in options.items() if v is not None}
        if log_prob:
            if not continuous:
                check_density(self, "log_prob")
            if not smp.get_sampler(sampler).exact_density:
                raise PhysdiffError(f"sampler {sampler!r} has no exact log-density; ask for log_prob from one that "
                                    "has: " + ", ".join(smp.density_names()))
            options["log_prob"] = True
        options = self.with_fitted_timesteps(sampler, options, guidance)
        used = smp.check_options(sampler, options, self.schedule.T)
        batch_size = batch_size or self.kind.sample_batch
        batch_size = max(NOISE_BLOCK, batch_size // NOISE_BLOCK * NOISE_BLOCK)
        all_labels = self.labels(np.arange(start, start + n), classes)
        outs, logps, snaps, nfe = [], [], {k: [] for k in snapshot_steps}, 0
        jac = self.normalizer.log_abs_det_jacobian(self.data_shape)
        with progress_bar(progress, n, f"sample ({sampler})", "sample") as bar:
            for lo in range(start, start + n, batch_size):
                count = min(batch_size, start + n - lo)
                noise = IndexedNoise(seed, lo, count, NOISE_BLOCK)
                x_T = randn_like(torch.empty((count, *self.data_shape), device=self.device), noise)
                if self.schedule.T in snaps:
                    snaps[self.schedule.T].append(x_T.cpu().numpy())

                def keep(i, t, x):
                    if i in snaps:
                        snaps[i].append(x.cpu().numpy())

                cond = None if all_labels is None else torch.from_numpy(
                    all_labels[lo - start:lo - start + count]).to(self.device)
                res = self.sample_normalized(x_T, noise, sampler=sampler, callback=keep, cond=cond,
                                             guidance=guidance, **options)
                nfe = max(nfe, res.nfe)
                x = self.normalizer.decode(res.samples.double()).float().cpu().numpy()
                if not np.isfinite(x).all():
                    raise PhysdiffError(f"sampler {sampler} produced {int((~np.isfinite(x)).sum())} non-finite "
                                        f"values in samples {lo}..{lo + count - 1}; nothing was written")
                self._warn_far_outliers(x, sampler)
                outs.append(x if continuous else self.kind.postprocess(x, self.cfg))
                if res.log_prob is not None:
                    logps.append(res.log_prob.cpu().numpy() + jac)  # data units: log p_x = log p_z + log|∂z/∂x|
                bar.update(count)  # once per batch: the decode above has synchronised
        samples = np.concatenate(outs) if outs else np.empty((0, *self.data_shape), dtype=np.float32)
        return SampleResult(samples, np.concatenate(logps) if logps else None, nfe,
                            {k: np.concatenate(v) for k, v in snaps.items() if v}, sampler, used,
                            resolve_guidance(guidance) if self.num_classes else None)

    def sample_normalized(self, x_T, generator=None, *, sampler="ddpm", callback=None, cond=None, guidance=None,
                          **options) -> SamplerResult:
        """Run one registered sampler from x_T in network units and return its SamplerResult
        (nothing is kept on the run). A sampler with an exact density runs the network in float32
        through a wrapper that forwards the divergence protocol of ``ode.py``."""
        self._warn_if_ill_conditioned(sampler, options.get("steps"))
        options = self.with_fitted_timesteps(sampler, options, guidance)
        cond = self.cond_input(x_T.shape[0], cond)
        net = GuidedModel(self.model, resolve_guidance(guidance), self.num_classes) if self.num_classes else self.model
        if sampler == "distilled":
            net = distill.read_students(self)
        if options.get("log_prob") or smp.get_sampler(sampler).exact_density:
            net = _float32(net)
        d = self.cfg.diffusion
        return run_sampler(sampler, net, self.schedule, x_T, prediction=d.prediction, variance=d.variance,
                           clip_x0=d.clip_x0 or None, cond=cond, generator=generator, callback=callback, **options)

    def fit_context(self, guidance: float | None) -> dict:
        """What besides the sampler a fit belongs to: the weights and their training step (a
        resumed run has other weights), the data shape (another lattice size is another flow),
        the coupling of a conditioned run and the guidance of a class-conditional one."""
        return {"weights": self.weights, "step": self.step, "data_shape": list(self.data_shape),
                "coupling": self.coupling, "guidance": resolve_guidance(guidance) if self.num_classes else None}

    def _fit_entry(self, sampler: str, options: dict, guidance: float | None) -> dict | None:
        """The run's timesteps.json entry for ``sampler`` with ``options`` in this context, or None."""
        from .fitted_steps import FILE, fit_key, read_fits, resolved_options

        resolved = resolved_options(sampler, options)
        if resolved is None:
            return None
        key = fit_key(sampler, resolved, self.fit_context(guidance))
        entry = read_fits(self.path).get(key)
        if entry is not None and entry["kept"]:  # indices of this run's schedule, as many as the steps
            try:
                smp.check_timesteps(entry["timesteps"], self.schedule.T, resolved.get("steps"))
            except PhysdiffError as exc:
                raise PhysdiffError(f"{str(self.path / FILE)!r} (fit {key!r}): {exc}; the file is corrupt or edited: "
                                    "delete it and fit again with physdiff fit-steps") from None
        return entry

    def fitted_timesteps(self, sampler: str, options: dict, guidance: float | None = None) -> list[int] | None:
        """The visited indices fitted to this run for ``sampler`` with ``options`` (``fit_steps``),
        None when there is no such fit or it did not beat logSNR-uniform steps."""
        entry = self._fit_entry(sampler, options, guidance)
        return list(entry["timesteps"]) if entry and entry.get("kept") else None

    def with_fitted_timesteps(self, sampler: str, options: dict, guidance: float | None = None) -> dict:
        """``options`` with ``spacing = "fitted"`` replaced by the run's fitted timesteps (refused,
        naming the command that fits them, when there are none); with no spacing and no
        timesteps given, the fitted ones when the run has them (else the sampler's default
        spacing). Other options are returned unchanged."""
        options = {k: v for k, v in options.items() if v is not None}
        if "timesteps" in options or options.get("spacing", "fitted") != "fitted":
            return options
        explicit = options.pop("spacing", None) == "fitted"
        entry = self._fit_entry(sampler, options, guidance)
        if entry is not None and entry.get("kept"):
            return options | {"timesteps": list(entry["timesteps"])}
        if explicit:
            from .fitted_steps import FITTABLE, resolved_options

            resolved = resolved_options(sampler, options)
            if resolved is None:
                raise PhysdiffError(f"spacing fitted is for the deterministic samplers with steps "
                                    f"({', '.join(FITTABLE)}; ddim with eta 0), not {sampler}"
                                    + (" with these options" if sampler in FITTABLE else ""))
            words = ", ".join(f"{k} {v}" for k, v in resolved.items())
            flags = " ".join(f"--{k} {v}" for k, v in resolved.items())
            if entry is not None:
                raise PhysdiffError(f"the timesteps fitted to run {str(self.path)!r} for {sampler} ({words}) "
                                    "did not beat logSNR-uniform ones on held-out draws, so none were kept; "
                                    "use spacing logsnr (on the command line --spacing logsnr)")
            raise PhysdiffError(f"run {str(self.path)!r} has no fitted timesteps for {sampler} ({words})"
                                f"{self._context_words(guidance)}; fit them first with fitted_steps.fit_steps (on the "
                                f"command line physdiff fit-steps {self.path} --sampler {sampler} {flags})")
        return options

    def _context_words(self, guidance) -> str:
        ctx = self.fit_context(guidance)
        words = [f"{self.conditioning.name} {self.coupling:g}"] if self.coupling is not None else []
        words += [f"guidance {ctx['guidance']:g}"] if ctx["guidance"] is not None else []
        words += ["model weights"] if self.weights != "ema" else []
        return f" ({', '.join(words)})" if words else ""

    def _warn_far_outliers(self, x: np.ndarray, sampler: str) -> None:
        """One warning when samples land far outside the training data's range: more than
        OUTLIER_MARGIN widths of the range beyond either end (fresh data essentially never do)."""
        if self.data_range is None or self.kind.value_range is not None or self._warned_outliers:
            return
        from .metrics import far_outliers

        lo, hi = self.data_range
        far = far_outliers(x, lo, hi, OUTLIER_MARGIN)
        if far.any():
            import warnings

            self._warned_outliers = True
            warnings.warn(f"{int(far.sum())} of {len(x)} samples from {sampler} lie more than {OUTLIER_MARGIN:g} data "
                          f"widths outside the training data's range [{lo:.3g}, {hi:.3g}] (largest |x| = "
                          f"{float(np.abs(x).max()):.3g}); see the outlier share of evaluate", OutlierWarning,
                          stacklevel=3)

    def _warn_if_ill_conditioned(self, sampler: str, steps: int | None) -> None:
        """ε-prediction gives x̂₀ = (x − σ ε̂)/α; at t = T with a tiny α (the cosine schedule's
        clipped last step: √ᾱ_T ≈ 5e-5) a network error δ in ε̂ becomes δ/α in x̂₀, which any
        sampler that jumps from T to a much less noisy step carries into the samples."""
        if self._warned or self.cfg.diffusion.prediction != "eps" or self.cfg.diffusion.clip_x0:
            return
        if sampler == "ddpm" and steps in (None, self.schedule.T):
            return  # ancestral on every step: each step is small
        sqrt_ab = float(self.schedule.sqrt_alpha_bar[-1])
        if sqrt_ab < 1e-3:
            import warnings

            from .schedule import ScheduleWarning

            self._warned = True
            warnings.warn(f"this run predicts ε on a schedule with √ᾱ_T = {sqrt_ab:.1e}: its x̂₀ at t = T amplifies "
                          f"network error by ~{1 / sqrt_ab:.0e}, and {sampler} on {steps or 'adaptive'} steps may "
                          "produce outliers; use prediction v, diffusion.clip_x0, or ddpm on all steps",
                          ScheduleWarning, stacklevel=3)

    def encode(self, x: np.ndarray, *, steps: int | None = None, spacing: str = "uniform") -> np.ndarray:
        """Deterministic DDIM inversion of data x (data units) to x_T (standardised units), of
        shape (N, *data_shape). x: (N, *data_shape), or any (N, ...) with as many values per row
        (a lattice run's (N, L, L), (N, 1, L, L) and (N, L²) alike)."""
        x = np.asarray(x)
        if x.ndim < 1 or len(x) < 1 or math.prod(x.shape[1:]) != math.prod(self.data_shape):
            raise PhysdiffError(f"data of shape {tuple(x.shape[1:])} per row do not match the run's data shape "
                                f"{self.data_shape} ({math.prod(self.data_shape)} values per row)")
        x = x.reshape(len(x), *self.data_shape)
        if steps is not None and not (isinstance(steps, int) and 1 <= steps <= self.schedule.T):
            raise PhysdiffError(f"encode's steps = {steps!r} must be an integer between 1 and T = {self.schedule.T}")
        z = self.normalizer.encode(torch.as_tensor(x, dtype=torch.float64)).float().to(self.device)
        return ddim_invert(self.model, self.schedule, z, steps=steps, spacing=spacing,
                           prediction=self.cfg.diffusion.prediction, cond=self.cond_input(len(z))).cpu().numpy()



class _Float32:
    """The network as a model callable for any input dtype (it runs in float32); forwards the
    divergence protocol of ``ode.py`` (the network's own, or autograd's trace)."""

    def __init__(self, net):
        self.net = net

    @staticmethod
    def _inputs(x, t, cond):
        return (x.float(), t.float() if t.is_floating_point() else t,
                cond.float() if cond is not None and cond.is_floating_point() else cond)

    def __call__(self, x, t, cond=None):
        return self.net(*self._inputs(x, t, cond)).to(x.dtype)

    def output_and_divergence(self, x, t, cond=None):
        from .ode import network_divergence

        out, trace = network_divergence(self.net, *self._inputs(x, t, cond))
        return out.to(x.dtype), trace


def _float32(net) -> _Float32:
    """The network as a model callable for any input dtype (it runs in float32)."""
    return _Float32(net)
