"""The KernelWarehouse attention: the contrasting-driven attention function (CAF) and its ablations.

Per sample and per mixture ``j`` of a layer (official ``Attention`` class)::

    p   = GAP(x)                                  (B, I)
    h   = ReLU(norm(fc1(p)))                      (B, H),  H = max(floor(I * reduction), 16)
    z   = fc2(h)                                  (B, m, n + 1): n warehouse cells + the zero cell
    z^  = z / (sum_t |z_t| + 1e-3)                signed L1 normalisation over the n + 1 slots
    a   = (1 - tau) * z^ + tau * beta             beta: one-hot init pattern (buffer ``init_pattern``)
    alpha = a[..., :n]                            the zero cell is dropped

The learned term ``z^`` passes through ``attention.learned_tap`` (an identity the probe hooks) before the
blend, so the learned attention can be measured apart from the pattern (see :mod:`kwlab.instruments.probe`).

Attention init (``attention_init``): ``"official"`` (default) is the official code's, bit for bit: fc2's bias
is zero, so at init ``z^`` is noise around zero and the function the net computes during the anneal is
carried by ``tau * beta``; when tau reaches 0 that function is gone unless the learned term has taken it
over (the *handover*). ``"pattern"`` is **kwlab's, not the official code's**: fc2's bias (``basis_bias`` with
the non-local basis) is set to ``s * beta`` with ``s = pattern_scale * E||z_j||_1``, the expected L1 norm of
one mixture's learned logits at init (estimated from the head's own weights with unit-variance hidden units,
a fixed-seed draw that leaves the global RNG untouched). The learned attention alone then reproduces the
pattern to within ``1 / (1 + pattern_scale)`` of its L1 mass, so ``tau = 0`` and ``tau = 1`` start close and
the anneal hands over nothing. The state_dict layout and the tau = 1 identity are unchanged.

``attention="caf_noinit"`` drops the ``tau * beta`` term (alpha = z^). ``"softmax"`` and ``"sigmoid"``
replace the L1 normalisation by ``softmax(z / T)`` / ``sigmoid(z / T)`` with ``T = 1 + 29 * tau``, so
the usual KW schedule (tau 1 -> 0) becomes DY-Conv's 30 -> 1 softmax temperature; these two have no init
pattern. The zero-cell slot is kept for every function (it absorbs mass; switch it off with
``zero_cell=False``).

Non-local basis (``nonlocal_basis_ratio < 1``, official ResNet50 KW 1/2x): fc2 has no bias and emits,
per mixture, logits for the layer's own ``floor(b * m)`` cells, ``N_b = max(floor(n_nonlocal * ratio), 16)``
basis logits and the zero cell; a shared ``fc3`` maps the basis to all other cells, which are put back
in warehouse order, and a learned ``basis_bias`` is added.

Normalisation (``attention_norm``): "batch" (official for ResNet/MobileNetV2; BatchNorm1d), "layer"
(official for ConvNeXt; LayerNorm) or "none". Batch-1 rule: a training-mode forward with a single
sample cannot compute batch statistics, so that forward normalises with the running statistics (as in
eval mode) and leaves them unchanged. Every other batch size behaves exactly as BatchNorm1d.
Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import DynamicAttention, Tap, TemperatureContract, check_tau, init_attention_head
from .norm import BatchNorm1dSafe
from .warehouse import check_budget, owned_cells

__all__ = [
    "KWAttention",
    "ATTENTION_FUNCTIONS",
    "ATTENTION_NORMS",
    "ATTENTION_INITS",
    "check_attention_init",
    "PATTERN_SCALE",
    "init_pattern",
    "attention_parameter_count",
]

ATTENTION_FUNCTIONS = ("caf", "caf_noinit", "softmax", "sigmoid")
ATTENTION_NORMS = ("batch", "layer", "none")
ATTENTION_INITS = ("official", "pattern")
#: Default ``pattern_scale`` of ``attention_init="pattern"`` (chosen by measurement; README, "the handover").
PATTERN_SCALE = 2.0


def init_pattern(
    num_mixtures: int, num_cells: int, start_cell: int, budget: float, *, device=None, dtype=None
) -> Tensor:
    """The official one-hot init pattern beta, shape ``(m, n + 1)`` (last column: the zero cell).

    ``b >= 1``: mixture j points at cell ``start + j * b``. ``b = 1/q``: mixture j points at the next owned
    cell when ``j % q == (j // q) % q``, else at the zero cell.
    """
    rows, cells = owned_cells(num_mixtures, start_cell, budget)
    target = torch.full((num_mixtures,), num_cells, dtype=torch.long)
    target[rows] = torch.tensor(cells, dtype=torch.long)
    beta = torch.zeros(num_mixtures, num_cells + 1, device=device, dtype=dtype)
    if beta.device.type == "meta":
        return beta
    return beta.scatter_(1, target.to(beta.device).unsqueeze(1), 1.0)


def attention_parameter_count(
    in_channels: int,
    num_mixtures: int,
    num_cells: int,
    *,
    budget: float = 1.0,
    reduction: float = 1 / 16,
    norm: str = "batch",
    zero_cell: bool = True,
    nonlocal_basis_ratio: float = 1.0,
) -> int:
    """Parameters of a :class:`KWAttention` with these arguments, by formula (nothing is allocated)."""
    hidden = max(int(in_channels * reduction), 16)
    slots = num_cells + (1 if zero_cell else 0)
    count = in_channels * hidden + (hidden if norm != "batch" else 0) + (2 * hidden if norm != "none" else 0)
    if nonlocal_basis_ratio < 1.0:
        local = int(float(check_budget(budget)) * num_mixtures)
        nonlocal_ = num_cells - local
        basis = max(int(nonlocal_ * nonlocal_basis_ratio), 16)
        return count + hidden * (local + basis + 1) * num_mixtures + basis * nonlocal_ + num_mixtures * slots
    return count + (hidden + 1) * num_mixtures * slots


def check_attention_init(attention_init: str, function: str) -> None:
    """Refuse an unknown ``attention_init``, and ``"pattern"`` with a function that has no init pattern."""
    if attention_init not in ATTENTION_INITS:
        raise ValueError(f"attention_init must be one of {ATTENTION_INITS}, got {attention_init!r}")
    if attention_init == "pattern" and function != "caf":
        raise ValueError(
            f"attention_init='pattern' needs attention='caf' (the only function with an init pattern), "
            f"got attention={function!r}"
        )


class KWAttention(DynamicAttention):
    """Attention of one KW layer; ``forward(x)`` returns alpha ``(B, m, n)``.

    Args:
        in_channels: channels of the layer's input (I).
        num_mixtures: m.
        num_cells: n, the size of the layer's warehouse.
        start_cell: first cell this layer owns (where its init pattern starts).
        budget: the warehouse's budget b (sets the init pattern and the local cell count).
        reduction: hidden width = max(floor(I * reduction), 16).
        function: one of :data:`ATTENTION_FUNCTIONS`.
        norm: one of :data:`ATTENTION_NORMS`.
        zero_cell: keep the extra zero-cell slot (official: yes).
        nonlocal_basis_ratio: < 1 enables the non-local basis mapping.
        attention_init: one of :data:`ATTENTION_INITS` ("official" or kwlab's "pattern", see the module doc).
        pattern_scale: with ``attention_init="pattern"``, the bias over the expected L1 norm of the learned
            logits at init (> 0).
    """

    temperature_contract = TemperatureContract(
        "blend weight tau of the one-hot init pattern (1 -> 0); evaluated at 0", 1.0, 0.0, 20.0
    )

    def __init__(
        self,
        in_channels: int,
        num_mixtures: int,
        num_cells: int,
        *,
        start_cell: int = 0,
        budget: float = 1.0,
        reduction: float = 1 / 16,
        function: str = "caf",
        norm: str = "batch",
        zero_cell: bool = True,
        nonlocal_basis_ratio: float = 1.0,
        temperature: float = 1.0,
        attention_init: str = "official",
        pattern_scale: float = PATTERN_SCALE,
        device=None,
        dtype=None,
    ) -> None:
        check_attention_init(attention_init, function)
        if isinstance(pattern_scale, bool) or not isinstance(pattern_scale, (int, float)) or not (
            0 < pattern_scale < float("inf")
        ):
            raise ValueError(f"pattern_scale must be a finite number > 0, got {pattern_scale!r}")
        if function not in ATTENTION_FUNCTIONS:
            raise ValueError(f"attention must be one of {ATTENTION_FUNCTIONS}, got {function!r}")
        if norm not in ATTENTION_NORMS:
            raise ValueError(f"attention_norm must be one of {ATTENTION_NORMS}, got {norm!r}")
        b = check_budget(budget)
        if b < 1 and not zero_cell and function in ("caf",):
            raise ValueError(
                "budget < 1 needs the zero cell (its init pattern points mixtures at it); "
                "use zero_cell=True or a budget >= 1"
            )
        super().__init__(
            num_mixtures, num_cells, zero_cell=zero_cell, temperature=check_tau(temperature, "temperature")
        )
        f = dict(device=device, dtype=dtype)
        if device is not None:
            self.temperature = self.temperature.to(device)
        self.function = function
        self.attention_init = attention_init
        self.pattern_scale = float(pattern_scale)
        self.learned_tap = Tap()
        self.slots = num_cells + (1 if zero_cell else 0)
        hidden = max(int(in_channels * reduction), 16)
        self.fc1 = nn.Linear(in_channels, hidden, bias=norm != "batch", **f)
        self.norm1 = {
            "batch": lambda: BatchNorm1dSafe(hidden, **f),
            "layer": lambda: nn.LayerNorm(hidden, **f),
            "none": nn.Identity,
        }[norm]()
        self.act1 = nn.ReLU(inplace=True)
        self.nonlocal_basis = nonlocal_basis_ratio < 1.0
        if self.nonlocal_basis:
            if not zero_cell:
                raise ValueError("nonlocal_basis_ratio < 1 requires zero_cell=True (official layout)")
            self.num_local = int(float(b) * num_mixtures)
            self.num_nonlocal = num_cells - self.num_local
            self.num_basis = max(int(self.num_nonlocal * nonlocal_basis_ratio), 16)
            self.start_cell = start_cell
            self.fc2 = nn.Linear(
                hidden, (self.num_local + self.num_basis + 1) * num_mixtures, bias=False, **f
            )
            self.fc3 = nn.Linear(self.num_basis, self.num_nonlocal, bias=False, **f)
            self.basis_bias = nn.Parameter(torch.zeros(num_mixtures * self.slots, **f))
        else:
            self.fc2 = nn.Linear(hidden, num_mixtures * self.slots, **f)
        beta = init_pattern(num_mixtures, num_cells, start_cell, budget, device=device, dtype=dtype)
        if not zero_cell:
            beta = beta[:, :num_cells]
        self.register_buffer("init_pattern", beta)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: Linear kaiming-normal (fan_out, relu) with zero bias; norm weight 1, bias 0.
        With ``attention_init="pattern"`` the last bias is then set to ``s * beta`` (see the module doc)."""
        init_attention_head(self)
        if self.nonlocal_basis:
            nn.init.zeros_(self.basis_bias)
        if self.attention_init == "pattern" and self.init_pattern.device.type != "meta":
            with torch.no_grad():
                scale = self.pattern_scale * self.expected_logit_l1()
                bias = self.basis_bias if self.nonlocal_basis else self.fc2.bias
                bias.copy_((scale * self.init_pattern).reshape(-1).to(bias.dtype))

    @torch.no_grad()
    def expected_logit_l1(self, draws: int = 512) -> float:
        """Expected L1 norm of one mixture's learned logits (biases excluded) when the hidden units are
        ``ReLU(N(0, 1))`` (the normalised hidden layer at init), estimated from ``draws`` samples of a fixed
        generator (the global RNG is not touched)."""
        gen = torch.Generator(device="cpu").manual_seed(0)
        weight = self.fc2.weight
        h = torch.randn(draws, weight.shape[1], generator=gen).clamp_min_(0).to(weight)
        z = self._head(h, with_bias=False)
        return float(z.abs().sum(-1).mean())

    def logits(self, x: Tensor) -> Tensor:
        """Raw logits z, shape ``(B, m, slots)``. ``x``: the layer input ``(B, I, *spatial)``."""
        pooled = x.flatten(2).mean(-1)
        hidden = self.act1(self.norm1(self.fc1(pooled)))
        return self._head(hidden)

    def _head(self, hidden: Tensor, with_bias: bool = True) -> Tensor:
        """Logits ``(B, m, slots)`` from the hidden units ``(B, H)``."""
        z = nn.functional.linear(hidden, self.fc2.weight, self.fc2.bias if with_bias else None)
        if self.nonlocal_basis:
            z = z.reshape(-1, self.num_local + self.num_basis + 1)
            local = z[:, : self.num_local]
            nonlocal_ = self.fc3(z[:, self.num_local : self.num_local + self.num_basis])
            zero = z[:, self.num_local + self.num_basis :]
            s = self.start_cell
            z = torch.cat([nonlocal_[:, :s], local, nonlocal_[:, s:], zero], dim=1)
            z = z.reshape(-1, self.num_mixtures * self.slots)
            if with_bias:
                z = z + self.basis_bias
        return z.reshape(-1, self.num_mixtures, self.slots)

    def coefficients(self, x: Tensor) -> Tensor:
        z = self.logits(x)
        tau = self.temperature
        if self.function in ("caf", "caf_noinit"):
            z = z / (z.abs().sum(dim=-1, keepdim=True) + 1e-3)
            if self.function == "caf":
                z = self.learned_tap(z)
                z = (1.0 - tau) * z + tau * self.init_pattern
            return z
        t = 1.0 + 29.0 * tau
        if self.function == "softmax":
            return torch.softmax(z / t, dim=-1)
        return torch.sigmoid(z / t)

    def extra_repr(self) -> str:
        return (
            f"function={self.function!r}, num_mixtures={self.num_mixtures}, num_cells={self.num_cells}, "
            f"zero_cell={self.zero_cell}"
            + (
                f", attention_init='pattern', pattern_scale={self.pattern_scale:g}"
                if self.attention_init == "pattern"
                else ""
            )
        )
