"""A network made for lattices whose exact divergence costs the same at every lattice size.

:class:`LocalNet` is a stack of periodic 3×3 convolutions without down-sampling, so the output at
site y depends on the field only within ℓ∞ distance r = ``depth`` of y (translation-equivariant on
the torus), plus a few global inputs: the zero mode M_c (the mean of each channel) and the
timestep, which modulate every layer (FiLM: a per-channel scale and shift).

Exact divergence with p² probes (per channel). Write the network as f(x, M(x)). Then

    tr ∂f/∂x = Σ_y ∂f_y/∂x_y |_M  +  Σ_c (1/V) Σ_y ∂f_{c,y}/∂M_c,

since ∂M_c/∂x_{c,y} = 1/V. For the first term, take p ≥ r + 1 dividing L and the indicator v_s of
each sub-lattice {y ≡ s mod p} (p² of them): (J v_s)_y = Σ_{z ≡ s} ∂f_y/∂x_z. For y ≡ s every
other z ≡ s lies at a torus distance ≥ p > r from y, where f_y does not depend on it, so
(J v_s)_y = ∂f_y/∂x_y exactly: the diagonal is read off p² forward-mode Jacobian-vector products,
one more per channel gives the rank-one part through M. C(p² + 1) products whatever L, against
L²·C backward passes for autograd's trace. For the stack as built they are written out by hand
(:meth:`LocalNet._forward_mode`, 2-4x faster on a CPU); any other network f(x, M(x)) goes through
torch.func's vmapped jvp. Not an estimator: tested against the
full autograd trace to float64 round-off, and a network that is not as local as it declares is
caught by :meth:`LocalNet.check_divergence`.

Low modes (``modes`` = n > 0). Near a critical point the field is organised on the scale of the
lattice, beyond any fixed radius r. The network may also read the smooth field P x, the projection
of x on its K = (2n + 1)² − 1 lowest momenta 0 < |k|∞ ≤ n (in units of 2π/L; :func:`low_mode_basis`,
an orthonormal basis u_j), fed to the first convolution beside x. P commutes with the lattice's
translations, rotations and reflections, and is linear (the odd wrapper keeps the network odd).
Write the network f(x, M(x), P x). The trace gains

    tr(∂f/∂(Px) · P) = Σ_c Σ_j u_jᵀ (∂f_c/∂(Px)_c) u_j,

C·K more Jacobian-vector products (the tangent u_j on the low field of channel c, x and M held),
still none that grows with L. The exact trace is kept; only its cost grows by K products per
channel.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .embeddings import TimestepEmbedding

# Activations of one probe batch (C·p²·B·width·V floats) above which a batch is evaluated in chunks, of at least
# MIN_CHUNK configurations: a bound on memory. On a CPU it is 2^21 floats (~8 MiB of tangents); no measurement in
# benchmarks/ shows a speed difference between chunk sizes, so the value bounds memory and claims no speed-up.
# Other devices keep 2^22.
PROBE_ELEMENTS = {"cpu": 2**21}
PROBE_ELEMENTS_OTHER = 2**22
MIN_CHUNK = 8


def _vmap_jvp(f, primal: torch.Tensor, tangents: torch.Tensor):
    """(f(primal), J_f tangents[k] for every k) by one vmapped forward-mode product: ``primal`` is
    not batched, so its pass runs once and only the tangent computations are batched. Its first use
    scripts torch's forward-AD decompositions with the deprecated torch.jit.script: that warning is
    torch's, not ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.func.vmap(lambda v: torch.func.jvp(f, (primal,), (v,)), out_dims=(None, 0))(tangents)


def _sublattice_masks(p: int, H: int, W: int, like: torch.Tensor) -> torch.Tensor:
    """(p², H, W): the indicator of sub-lattice s = (i mod p)·p + (j mod p) for each s, like ``like``."""
    sub = ((torch.arange(H, device=like.device) % p)[:, None] * p + (torch.arange(W, device=like.device) % p)[None, :])
    return torch.stack([(sub == s).to(like.dtype) for s in range(p * p)])


def low_mode_basis(n: int, H: int, W: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """(K, H, W): an orthonormal real basis of the periodic fields whose Fourier modes are the
    momenta k = 2π(k₁/H, k₂/W) with 0 < max(|k₁|, |k₂|) ≤ n, K = (2n + 1)² − 1: cos(k·y) and sin(k·y)
    times √(2/V) for one k of each pair ±k. Exactly orthonormal when H, W > 2n (no two of these
    momenta alias and no sine vanishes); the span is invariant under translations, rotations and
    reflections of the lattice."""
    if min(H, W) <= 2 * n:
        raise ValueError(f"the low modes of shell {n} need a lattice wider than {2 * n} sites (got {H}×{W})")
    i = torch.arange(H, dtype=torch.float64, device=device)[:, None]
    j = torch.arange(W, dtype=torch.float64, device=device)[None, :]
    rows = []
    for k1 in range(0, n + 1):
        for k2 in range(-n, n + 1):
            if k1 == 0 and k2 <= 0:  # one momentum of each pair ±k
                continue
            phase = 2 * torch.pi * (k1 * i / H + k2 * j / W)
            rows += [torch.cos(phase), torch.sin(phase)]
    return (torch.stack(rows) * (2.0 / (H * W)) ** 0.5).to(dtype)


def probe_period(radius: int, H: int, W: int) -> int | None:
    """The smallest p ≥ radius + 1 that divides both H and W (None: no such p below the lattice
    size, and the probes would cost as much as autograd)."""
    for p in range(radius + 1, min(H, W)):
        if H % p == 0 and W % p == 0:
            return p
    return None


class LocalNet(nn.Module):
    """ε(x, t) on (B, C, H, W) periodic fields (square or not): ``depth`` periodic 3×3 convolutions of ``channels``
    (receptive field radius r = depth, ℓ∞), each followed by SiLU and a FiLM of the global features
    (the zero modes M_c and the timestep embedding), and a 1×1 output convolution (zero-initialised:
    the network starts at ε = 0, the Gaussian part's answer when there is one)."""

    def __init__(self, in_channels: int, *, channels: int = 32, depth: int = 3, time_dim: int = 64,
                 global_width: int = 64, coupling_range: tuple[float, float] | None = None, modes: int = 0):
        super().__init__()
        if depth < 1:
            raise ValueError("LocalNet needs depth >= 1")
        if modes < 0:
            raise ValueError("LocalNet needs modes >= 0")
        self.radius = depth
        # modes > 0: the field's projection on its lowest momenta (low_mode_basis), a smooth global field P x,
        # is fed to the first convolution beside x (one more input channel per field channel)
        self.modes, self._bases = int(modes), {}
        # a coupling-conditioned run: cond (B,) is the coupling, mapped from its trained range onto [-1, 1] and
        # fed with the zero modes and the timestep into the global features (it does not depend on x)
        self.coupling_range = None if coupling_range is None else tuple(float(v) for v in coupling_range)
        self.time = TimestepEmbedding(time_dim, global_width)
        extra = 0 if coupling_range is None else 1
        self.globals = nn.Sequential(nn.Linear(global_width + in_channels + extra, global_width), nn.SiLU())
        convs, films = [], []
        for i in range(depth):
            convs.append(nn.Conv2d(in_channels * (2 if modes else 1) if i == 0 else channels, channels, 3, padding=1,
                                   padding_mode="circular"))
            films.append(nn.Linear(global_width, 2 * channels))
        self.convs, self.films = nn.ModuleList(convs), nn.ModuleList(films)
        self.out = nn.Conv2d(channels, in_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _globals_in(self, cond: torch.Tensor | None, batch: int, like: torch.Tensor) -> list[torch.Tensor]:
        """The coupling as a (B, 1) global input ([] for an unconditioned network)."""
        if self.coupling_range is None:
            return []
        lo, hi = self.coupling_range
        if cond is None:
            raise ValueError(f"this network is conditioned on a coupling in [{lo:g}, {hi:g}]: give it as cond")
        c = (cond.to(like.dtype).reshape(-1) - 0.5 * (lo + hi)) / (0.5 * (hi - lo))
        return [c.expand(batch)[:, None]]

    def basis(self, H: int, W: int, like: torch.Tensor) -> torch.Tensor:
        """The low modes' basis (K, H, W) at this lattice size (:func:`low_mode_basis`), like ``like``."""
        key = (H, W, like.dtype, like.device)
        if key not in self._bases:
            self._bases[key] = low_mode_basis(self.modes, H, W, like.dtype, like.device)
        return self._bases[key]

    def low(self, x: torch.Tensor) -> torch.Tensor | None:
        """P x: each channel of x projected on the low modes (None when ``modes`` = 0)."""
        if not self.modes:
            return None
        u = self.basis(*x.shape[-2:], x)
        return torch.einsum("bck,khw->bchw", torch.einsum("bchw,khw->bck", x, u), u)

    def local(self, x: torch.Tensor, m: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
              low: torch.Tensor | None = None) -> torch.Tensor:
        """The network with the zero modes ``m`` (B, C) and the low-mode field ``low`` (B, C, H, W;
        None without ``modes``) as inputs of their own (see the module docstring): the output at y
        depends on x within distance ``radius`` of y, and on m, low, t (and the coupling ``cond``
        of a conditioned network)."""
        B = x.shape[0]
        g = self.globals(torch.cat([self.time(t.reshape(-1).expand(B)), m, *self._globals_in(cond, B, m)], dim=1))
        if self.modes and low is None:
            raise ValueError("this network takes the low-mode field P x as an input (low=): see LocalNet.low")
        h = x if low is None else torch.cat([x, low], dim=1)
        for conv, film in zip(self.convs, self.films, strict=True):
            scale, shift = film(g)[:, :, None, None].chunk(2, dim=1)
            h = torch.nn.functional.silu(conv(h)) * (1 + scale) + shift
        return self.out(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.local(x, x.mean(dim=(-2, -1)), t, cond, low=self.low(x))

    def output_and_divergence(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None):
        """(output, tr ∂output/∂x (B,) float64), exactly, with C(p² + 1 + K) Jacobian-vector products
        (the module docstring; K low modes), evaluated as vmapped forward-mode passes (the C·p²
        probes, the C zero-mode tangents, the C·K low-mode waves; the primal pass once each);
        autograd's trace when no probe period fits the lattice. Batches whose tangents would exceed
        ``PROBE_ELEMENTS`` floats are evaluated in chunks (the same numbers)."""
        B, C, H, W = x.shape
        p = probe_period(self.radius, H, W)
        width = max(c.out_channels for c in self.convs)
        budget = PROBE_ELEMENTS.get(x.device.type, PROBE_ELEMENTS_OTHER)
        tangents = C * ((p or 1) ** 2 + (2 * self.modes + 1) ** 2 - 1)  # the probes and the low modes' waves
        chunk = max(MIN_CHUNK, budget // (tangents * width * H * W))
        if p is not None and B > chunk:  # the probes' activations of one chunk stay near the budget
            t = t.reshape(-1).expand(B)
            cond = None if cond is None else cond.reshape(-1).expand(B)
            parts = [self.output_and_divergence(x[i:i + chunk], t[i:i + chunk],
                                                None if cond is None else cond[i:i + chunk])
                     for i in range(0, B, chunk)]
            return torch.cat([o for o, _ in parts]), torch.cat([d for _, d in parts])
        return self._output_and_divergence(x, t, cond)

    def _output_and_divergence(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None):
        from ..ode import exact_divergence

        B, _, H, W = x.shape
        p = probe_period(self.radius, H, W)
        if p is None:
            return exact_divergence(lambda z: self(z, t, cond), x)
        x, t = x.detach(), t.detach().reshape(-1).expand(B)
        cond = None if cond is None else cond.detach().reshape(-1).expand(B)
        if self._as_built():  # the stack as written here: its forward mode by hand
            with torch.no_grad():
                return self._forward_mode(x, t, cond, p)
        return self._vmapped_probes(x, t, cond, p)  # anything else: torch.func's forward mode on local()

    def _as_built(self) -> bool:
        """Whether this is the stack :meth:`_forward_mode` differentiates by hand: this class's own
        ``local`` (not a subclass's or an instance's), 3×3 periodic convolutions of stride 1, a
        1×1 output and the global features SiLU(Linear(...))."""
        convs_ok = all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.dilation == (1, 1) and c.padding == (1, 1)
                       and c.padding_mode == "circular" and c.groups == 1 for c in self.convs)
        out_ok = self.out.kernel_size == (1, 1) and self.out.stride == (1, 1) and self.out.groups == 1
        globals_ok = (isinstance(self.globals, nn.Sequential) and len(self.globals) == 2
                      and isinstance(self.globals[0], nn.Linear) and isinstance(self.globals[1], nn.SiLU))
        return type(self) is LocalNet and "local" not in vars(self) and convs_ok and out_ok and globals_ok

    def _vmapped_probes(self, x, t, cond, p):
        """The probes through torch.func (jvp batched by vmap) on ``local``: any network f(x, M(x))."""
        B, C, H, W = x.shape
        m = x.mean(dim=(-2, -1))
        masks = _sublattice_masks(p, H, W, x)[:, None]
        tangents = torch.zeros((C * p * p, *x.shape), dtype=x.dtype, device=x.device)
        for c in range(C):
            tangents[c * p * p:(c + 1) * p * p, :, c] = masks
        low = self.low(x)
        with torch.enable_grad():
            # vmap over the probes of one forward-mode product: the primal pass (x unbatched) runs once,
            # only the tangents are batched
            out, jv = _vmap_jvp(lambda z: self.local(z, m, t, cond, low=low), x, tangents)
            trace = (jv * tangents).sum(dim=(0, 2, 3, 4)).double()
            # the rank-one part through the zero modes: one product per channel, batched the same way
            e = torch.eye(C, dtype=x.dtype, device=x.device)[:, None, :].expand(C, B, C)
            _, jm = _vmap_jvp(lambda mm: self.local(x, mm, t, cond, low=low), m, e)
            trace = trace + torch.diagonal(jm.sum(dim=(-2, -1)), dim1=0, dim2=2).sum(-1).double() / (H * W)
            if low is not None:  # the rank-K part through P x = Σ_j u_j u_jᵀ x: Σ_{c,j} u_jᵀ (∂f_c/∂low_c) u_j
                u = self.basis(H, W, x)
                K = u.shape[0]
                waves = torch.zeros((C * K, *x.shape), dtype=x.dtype, device=x.device)
                for c in range(C):
                    waves[c * K:(c + 1) * K, :, c] = u[:, None]
                _, jl = _vmap_jvp(lambda ll: self.local(x, m, t, cond, low=ll), low, waves)
                trace = trace + (jl * waves).sum(dim=(0, 2, 3, 4)).double()
        return out.detach(), trace

    def _forward_mode(self, x, t, cond, p):
        """The same products as :meth:`_vmapped_probes`, written out for this stack of layers
        h_k = silu(a_k)(1 + scale_k) + shift_k, a_k = conv_k(h_{k-1}) (same numbers to round-off,
        tests/test_local_net.py), with three savings that only the structure allows:

        - the first layer's probe tangents conv_1(v_s) do not depend on the configuration: one
          convolution of the C·p² indicators, not of C·p²·B;
        - a tangent passes a layer as ȧ_k = conv_k(ḣ_{k-1}) without bias and ḣ_k = silu'(a_k)(1 + scale_k) ȧ_k,
          the factor computed once on the primal and shared by every probe;
        - only the output at the probe's own sub-lattice is read, so the last convolution's tangent
          is evaluated there only: a stride-p convolution starting at s (1/p² of the work).

        The low modes' waves (``modes`` > 0) start batch-independent too, pass every layer in full
        (their output is read everywhere, projected on u_j) and meet only the first layer's
        low-field weights, as the probes meet only its x weights."""
        B, C, H, W = x.shape
        P = p * p
        m = x.mean(dim=(-2, -1))
        temb, extra = self.time(t), self._globals_in(cond, B, m)
        lin = self.globals[0]  # globals = SiLU(Linear([temb, m, coupling])) (_as_built)
        pre = lin(torch.cat([temb, m, *extra], dim=1))
        g = self.globals[1](pre)
        low = self.low(x)
        h, layers = (x if low is None else torch.cat([x, low], dim=1)), []
        for conv, film in zip(self.convs, self.films, strict=True):
            scale, shift = film(g)[:, :, None, None].chunk(2, dim=1)
            a = conv(h)
            s = torch.nn.functional.silu(a)
            sig = torch.sigmoid(a)
            one_scale = 1 + scale
            layers.append((s, sig * (1 + a * (1 - sig)) * one_scale))  # silu(a), silu'(a)(1 + scale)
            h = s * one_scale + shift
        out = self.out(h)
        w_out = self.out.weight[:, :, 0, 0]  # (C, channels)

        def conv_tangent(conv, v):  # the convolution's linear part on a batch of tangents
            return torch.nn.functional.conv2d(torch.nn.functional.pad(v, (1, 1, 1, 1), mode="circular"), conv.weight)

        def halo(buf):  # fill the one-site periodic border of buf (.., H + 2, W + 2) from its interior
            buf[..., 0, 1:-1], buf[..., H + 1, 1:-1] = buf[..., H, 1:-1], buf[..., 1, 1:-1]
            buf[..., 0], buf[..., W + 1] = buf[..., W], buf[..., 1]
            return buf

        # probes: k = c·P + s, the indicator of sub-lattice s on channel c. Their tangents are kept with the
        # periodic border the next convolution reads (written in place: no padded copy of the largest tensor)
        v = torch.zeros((C * P, 1, C, H + 2, W + 2), dtype=x.dtype, device=x.device)
        masks = _sublattice_masks(p, H, W, x)
        for c in range(C):
            v[c * P:(c + 1) * P, 0, c, 1:-1, 1:-1] = masks
        def through(dh, ws):  # a tangent of the input through the layers of ws, keeping the periodic border
            for k, wk in enumerate(ws):
                da = torch.nn.functional.conv2d(dh.flatten(0, 1), wk).unflatten(0, dh.shape[:2])
                dh = torch.empty((da.shape[0], B, da.shape[2], H + 2, W + 2), dtype=x.dtype, device=x.device)
                torch.mul(layers[k][1], da, out=dh[..., 1:-1, 1:-1])
                halo(dh)
            return dh

        # the weights a tangent of layer k's input meets (the first layer's x part: the low-mode field is held)
        weights = [self.convs[0].weight[:, :C], *(c.weight for c in self.convs[1:])]
        # (K, 1 or B, C_k, H + 2, W + 2): the tangent of h_k, batch-independent before layer 1
        dh = through(halo(v), weights[:-1])
        # the last layer at the probe's sub-lattice s = (s1, s2) only: a stride-p convolution starting at s
        trace = torch.zeros(B, dtype=x.dtype, device=x.device)
        d_last = layers[-1][1]
        for s in range(P):
            s1, s2 = divmod(s, p)
            probes = dh[s::P]  # (C, 1 or B, ch, H + 2, W + 2): the probes of sub-lattice s, one per channel
            da = torch.nn.functional.conv2d(probes[..., s1:, s2:].flatten(0, 1), weights[-1],
                                            stride=p).unflatten(0, probes.shape[:2])  # (C, B, ch, H/p, W/p)
            dh_s = d_last[..., s1::p, s2::p] * da
            trace = trace + torch.einsum("cbj,cj->b", dh_s.sum(dim=(-2, -1)), w_out)
        trace = trace.double()

        if low is not None:  # the low modes: loẇ = u_j on channel c (x and m fixed), all layers in full
            u = self.basis(H, W, x)
            K = u.shape[0]
            w = torch.zeros((C * K, 1, C, H + 2, W + 2), dtype=x.dtype, device=x.device)
            for c in range(C):
                w[c * K:(c + 1) * K, 0, c, 1:-1, 1:-1] = u
            dh = through(halo(w), [self.convs[0].weight[:, C:], *weights[1:]])[..., 1:-1, 1:-1]
            # Σ_y ḟ_{c,y} u_j(y) through the linear output layer, for tangent (c, j)
            proj = torch.einsum("kbjhw,khw->kbj", dh, u.repeat(C, 1, 1))
            trace = trace + torch.einsum("kbj,kj->b", proj, w_out.repeat_interleave(K, dim=0)).double()

        # the zero modes: ṁ = e_c moves the global features only (x fixed), ȧ_1 = 0
        sig = torch.sigmoid(pre)  # ġ = silu'(pre) · the column of m_c in the global features' Linear
        cols = lin.weight[:, temb.shape[1]:temb.shape[1] + C].T  # (C, gw)
        dg = (sig * (1 + pre * (1 - sig)))[None] * cols[:, None, :]  # (C, B, gw)
        dh = None
        for k, (conv, film) in enumerate(zip(self.convs, self.films, strict=True)):
            dscale, dshift = (dg @ film.weight.T)[..., None, None].chunk(2, dim=2)
            s, d = layers[k]
            dh = s * dscale + dshift if dh is None else \
                d * conv_tangent(conv, dh.flatten(0, 1)).unflatten(0, dh.shape[:2]) + s * dscale + dshift
        # Σ_y ∂f_{c,y}/∂M_c through the linear output layer, times ∂M_c/∂x_{c,y} = 1/V
        trace = trace + torch.einsum("cbj,cj->b", dh.sum(dim=(-2, -1)), w_out).double() / (H * W)
        return out, trace

    def check_divergence(self, x: torch.Tensor, t: torch.Tensor, rtol: float = 1e-6, cond=None) -> float:
        """The largest difference between the probe trace and autograd's full trace on ``x``,
        relative to max(1, the largest |trace|); raises ValueError beyond ``rtol`` (a network less
        local than its ``radius``)."""
        from ..ode import exact_divergence

        _, fast = self.output_and_divergence(x, t, cond)
        _, full = exact_divergence(lambda z: self(z, t, cond), x)
        fast, full = fast.detach(), full.detach()
        err = float((fast - full).abs().max() / max(1.0, float(full.abs().max())))
        if err > rtol:
            raise ValueError(f"the probe divergence differs from autograd's by {err:.2e} (relative): the network "
                             f"depends on sites beyond its declared radius {self.radius}")
        return err
