"""The attention protocol shared by every dynamic layer in kwlab.

A *dynamic layer* builds its weight from the input. Every one of them, KernelWarehouse or a
relative (CondConv, DY-Conv, ODConv, KernelDNA), follows the same protocol so that the probe,
the temperature schedule and the freezing tools work on all of them unchanged:

* the layer subclasses :class:`DynamicLayer` and has a child module named ``attention``;
* ``layer.attention(x)`` returns the mixing coefficients ``alpha`` with shape ``(B, m, n)``:
  ``m`` mixtures of this layer (KW: kernel cells of this layer; whole-kernel methods: 1), ``n``
  entries of the bank that the mixtures draw from (KW: the cells of the layer's warehouse;
  CondConv/DY-Conv/ODConv: the layer's own kernels; KernelDNA: its input channels);
* ``layer.bank`` names that bank: the warehouse key for KW (several layers share one), the layer's
  own qualified name otherwise;
* the attention has a child ``tap`` (an identity) through which the *full* coefficients pass
  before any slot is dropped, shape ``(B, m, n + 1)`` when the method has a zero cell
  (``attention.zero_cell`` is True), else ``(B, m, n)``. The probe hooks it to measure the mass
  that went to the zero cell;
* ``attention.temperature`` is a 0-d tensor holding the temperature in the layer's own units; the class's
  :class:`TemperatureContract` says what it means, and :func:`kwlab.set_temperature` sets it from the anneal
  position ``tau`` (1 = start, 0 = end). It is saved in ``state_dict`` (key ``...attention.temperature``, as
  a buffer would be) and moved by ``.to()``, but it is *not* a registered buffer: weight averaging (timm's
  ``ModelEmaV2/V3``, ``torch.optim.swa_utils.AveragedModel``) sees only ``buffers()`` and in-place updates of
  ``state_dict()`` values, so it never changes a model's temperature (see :class:`DynamicAttention`);
* ``attention.frozen_alpha`` is ``None`` or a ``(m, n)`` buffer; when set, ``forward`` returns it
  for every sample (see :func:`kwlab.freeze_attention`), which turns the layer static.

Hooks never live here: only :mod:`kwlab.instruments.probe` registers them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "Tap",
    "DynamicAttention",
    "TemperatureContract",
    "NO_TEMPERATURE",
    "init_attention_head",
    "DynamicLayer",
    "dynamic_layers",
    "set_temperature",
    "get_temperature",
    "parameter_breakdown",
    "BREAKDOWN_PARTS",
    "KeepsLayout",
    "ATTENTION_MODES",
    "check_attention_mode",
]


@dataclass(frozen=True)
class TemperatureContract:
    """What a method's temperature means, and how the anneal position ``tau`` maps onto it.

    Every schedule in kwlab is an anneal position ``tau`` going from 1 (start) to 0 (end), as KW's. A layer
    stores ``end + tau * (start - end)`` in its own units: KW's blend weight is ``tau`` itself (1 -> 0);
    DY-Conv's and ODConv's softmax divisor is ``T = 1 + 29 * tau`` (30 -> 1, so ``tau = 0`` is their
    evaluation temperature T = 1). A method without a temperature ignores it.

    Attributes:
        meaning: what the stored value does, in words.
        start, end: the stored value at ``tau = 1`` and at ``tau = 0``.
        epochs: the official anneal span in epochs (None: no schedule).
    """

    meaning: str
    start: float = 1.0
    end: float = 0.0
    epochs: float | None = None

    @property
    def active(self) -> bool:
        return self.epochs is not None

    def value(self, tau: float) -> float:
        """The stored value at anneal position ``tau``."""
        return self.end + tau * (self.start - self.end)

    def position(self, value: float) -> float:
        """The anneal position of a stored value (inverse of :meth:`value`)."""
        return (value - self.end) / (self.start - self.end) if self.start != self.end else 0.0


#: The contract of methods with no temperature (CondConv, KernelDNA): ``set_temperature`` leaves them alone.
NO_TEMPERATURE = TemperatureContract("none: this method has no temperature", 1.0, 1.0, None)


class Tap(nn.Identity):
    """An identity the probe can hook; it sees the attention's full coefficients."""


class DynamicAttention(nn.Module):
    """Base class of attention heads: subclasses implement :meth:`coefficients`.

    Args:
        num_mixtures: m, the mixtures this layer computes per sample.
        num_cells: n, the size of the bank the mixtures draw from.
        zero_cell: whether :meth:`coefficients` returns one extra, dropped slot per mixture.
        temperature: initial value of the ``temperature``, in the layer's units.

    Subclasses declare ``temperature_contract``; ``uses_temperature = False`` says that the temperature exists
    for the protocol only and changes nothing (CondConv, KernelDNA): the probe then reports NaN for it.

    **The temperature is a schedule position, not a learned or averaged state.** It is kept as a plain tensor
    attribute rather than a registered buffer, so weight averaging cannot touch it: timm's ``ModelEmaV2/V3``
    lerp every floating ``state_dict()`` value in place, and ``AveragedModel(use_buffers=True)`` every
    ``buffers()`` entry, which once moved an EMA copy from tau 1 towards the live tau (0.346 where the live
    model was at 0). ``state_dict()`` still holds ``prefix + "temperature"`` (a copy, at the place a buffer's
    key would be, so the layout of every checkpoint is unchanged) and ``load_state_dict`` restores it (strict
    loads report it missing as they would a buffer); ``.to()``/``.cuda()``/``to_empty()`` move it. An EMA copy
    therefore keeps the temperature it was created with (a ``deepcopy`` of the live model) until
    :func:`kwlab.set_temperature` is called on it; timm's ``load_checkpoint(use_ema=True)`` restores that one.
    """

    temperature_contract: TemperatureContract = NO_TEMPERATURE
    uses_temperature: bool = True
    #: False for the ``attention="constant"`` controls: the coefficients are learned constants, the same
    #: for every sample (see :func:`check_attention_mode`)
    input_dependent: bool = True

    def __init__(
        self, num_mixtures: int, num_cells: int, *, zero_cell: bool = False, temperature: float = 0.0
    ) -> None:
        super().__init__()
        self.num_mixtures = int(num_mixtures)
        self.num_cells = int(num_cells)
        self.zero_cell = bool(zero_cell)
        self.tap = Tap()
        self.temperature = torch.tensor(float(temperature))  # not a buffer: see the class docstring
        self.register_buffer("frozen_alpha", None)

    # -- the temperature: saved and loaded as a buffer would be, invisible to buffers() and weight averaging
    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 (nn.Module's signature)
        super()._apply(fn, recurse)
        t = self.__dict__.get("temperature")
        if isinstance(t, Tensor):
            with torch.no_grad():
                self.__dict__["temperature"] = fn(t)
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: ANN001 (nn.Module's signature)
        local: dict[str, Any] = {}
        super()._save_to_state_dict(local, prefix, keep_vars)
        own_params = {prefix + n for n, p in self._parameters.items() if p is not None}
        key, pending = prefix + "temperature", True
        for k, v in local.items():  # the key goes where the buffer's went: after the parameters
            if pending and k not in own_params:
                destination[key], pending = self.temperature.detach().clone(), False
            destination[k] = v
        if pending:
            destination[key] = self.temperature.detach().clone()

    def _load_from_state_dict(  # noqa: ANN001, PLR0913 (nn.Module's signature)
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        key = prefix + "temperature"
        if key in unexpected_keys:
            unexpected_keys.remove(key)
        if key not in state_dict:
            if strict:
                missing_keys.append(key)
            return
        value = state_dict[key]
        if not isinstance(value, Tensor):
            error_msgs.append(
                f'While copying the parameter named "{key}", expected torch.Tensor, got {type(value)}'
            )
            return
        if value.dim() == 1 and value.numel() == 1:  # as nn.Module does for 0-d buffers saved as (1,)
            value = value[0]
        if value.shape != self.temperature.shape:
            error_msgs.append(
                f"size mismatch for {key}: copying a param with shape {value.shape} from checkpoint, "
                f"the shape in current model is {self.temperature.shape}."
            )
            return
        with torch.no_grad():
            if local_metadata.get("assign_to_params_buffers", False):
                self.__dict__["temperature"] = value.detach().clone()
            else:
                self.temperature.copy_(value)

    def coefficients(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Full coefficients ``(B, m, n + zero_cell)`` for input ``x``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Mixing coefficients ``alpha``, shape ``(B, m, n)``."""
        if self.frozen_alpha is not None:
            return self.frozen_alpha.unsqueeze(0).expand(x.shape[0], -1, -1)
        full = self.tap(self.coefficients(x))
        if self.zero_cell:
            return full[..., : self.num_cells]
        return full


def init_attention_head(head: nn.Module) -> None:
    """The OSVAI attention init (KernelWarehouse, ODConv): every Linear/Conv weight kaiming-normal (fan_out,
    relu) with zero bias, every norm layer reset (weight 1, bias 0, fresh running statistics)."""
    for m in head.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm)):
            m.reset_parameters()


class KeepsLayout(nn.Module):
    """Mixin: ``.to(memory_format=...)`` leaves this module's parameters, buffers and gradients in their
    contiguous layout and only moves them (device, dtype).

    ``nn.Module.to(memory_format=torch.channels_last)`` converts every 4-D and 5-D tensor, and torch refuses
    channels_last for the 5-D kernel banks and warehouses of the dynamic layers (``required rank 4 tensor``).
    Memory formats are for activations and the 4-D weights of static convolutions; a bank is read as a matrix
    (``alpha @ bank.flatten(1)``), so its contiguous layout is the one that helps. Every conversion
    (``.to``, ``.cuda``, ``.half``, ...) is applied to a flat view of each 4-D/5-D tensor and reshaped back,
    so the values, device and dtype change exactly as asked and the layout stays contiguous.
    """

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 (nn.Module's signature)
        return super()._apply(_flat_apply(fn), recurse)


def _flat_apply(fn):  # noqa: ANN001, ANN202
    def apply(t: Tensor) -> Tensor:
        if t.dim() not in (4, 5):  # the only ranks nn.Module.to gives a memory format
            return fn(t)
        return fn(t.reshape(-1)).view(t.shape)

    apply.__wrapped__ = fn
    return apply


class DynamicLayer(KeepsLayout):
    """Base class of every layer whose weight depends on the input through ``self.attention``.

    Its own tensors keep their layout under ``.to(memory_format=...)`` (see :class:`KeepsLayout`).
    """

    attention: DynamicAttention

    # TorchScript cannot represent these layers (custom autograd Functions, Python-side dispatch on shapes):
    # refuse it by name and point at what works, instead of a deep compiler error or a trace that bakes in
    # one batch's control flow.
    _JIT_REFUSAL = (
        "{what} does not support kwlab's dynamic layers ({layer}); export with torch.export.export(model, "
        "(x,), dynamic_shapes={{'x': {{0: torch.export.Dim('batch')}}}}) (any batch size) "
        "or compile it with torch.compile"
    )

    def __prepare_scriptable__(self):  # noqa: ANN204 (called by torch.jit.script on every submodule)
        raise RuntimeError(self._JIT_REFUSAL.format(what="torch.jit.script", layer=type(self).__name__))

    def _slow_forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202 (nn.Module calls it under jit.trace only)
        raise RuntimeError(self._JIT_REFUSAL.format(what="torch.jit.trace", layer=type(self).__name__))

    @property
    def bank(self) -> str:
        """Name of the parameter bank that ``alpha``'s last axis indexes."""
        return getattr(self, "_bank", "") or ""

    def effective_kernels(self, x: Tensor) -> Tensor:
        """The kernel each sample of ``x`` is convolved with, ``(B, O, I/groups, *kernel_size)`` (a
        :class:`KWLinear <kwlab.layers.KWLinear>` or DCD classifier: ``(B, O, I, ...)``): the static kernel
        ``W_b`` with ``conv(x_b, W_b) + c_b = self(x)[b]``, ``c_b`` a constant per output channel (the
        bias). Every input-dependent factor is folded in: mixed kernels, input- and output-channel and
        spatial attentions. Runs the layer's attention on ``x`` as ``forward`` does (in the current
        train/eval mode, through ``attention.tap``). The probe's ``kernel_variation`` reads it
        (:func:`kwlab.instruments.metrics.kernel_variation`); each method documents what its kernel
        leaves out (FDConv: the frequency band modulation of the input; DCD: see its class)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its per-sample kernels")


def fold_input_scale(weight: Tensor, scale: Tensor, groups: int = 1) -> Tensor:
    """Per-sample kernels ``weight (B, O, I/groups, ...)`` with a per-sample input-channel scale ``scale
    (B, I)`` folded in: ``conv(x * scale, W) = conv(x, W * scale)`` where output channel ``o`` of group
    ``g`` reads input channels ``g * I/groups + j``."""
    b, o, ig = weight.shape[:3]
    per_out = scale.view(b, groups, 1, ig).expand(b, groups, o // groups, ig).reshape(b, o, ig)
    return weight * per_out.view(b, o, ig, *([1] * (weight.dim() - 3)))


def check_positive_int(name: str, value: Any) -> int:
    """``value`` if it is a whole number >= 1, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


def like_conv(cls: type, conv: nn.Conv2d, **kwargs: Any) -> nn.Module:
    """``cls`` built with ``conv``'s geometry (channels, kernel, stride, padding, dilation, groups, bias,
    padding mode), device and dtype, plus ``kwargs`` (which may name another ``device``/``dtype``): the shared
    first step of every ``from_conv``."""
    factory = dict(device=conv.weight.device, dtype=conv.weight.dtype)
    return cls(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        padding_mode=conv.padding_mode,
        **{**factory, **kwargs},
    )


def conv_geometry(
    dim: int,
    in_channels: int,
    out_channels: int,
    kernel_size,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    padding_mode: str = "zeros",
    *,
    asymmetric_same: bool = False,
) -> dict[str, Any]:
    """Validate ``nn.ConvNd``-style arguments and normalise them to ``dim``-tuples (every dynamic conv layer).

    Returns ``kernel_size``, ``stride``, ``padding`` (a tuple, or "same"/"valid") and ``dilation``.
    ``padding="same"`` with an even effective kernel (``dilation * (k - 1)`` odd) pads one side more than the
    other; only layers that run ``F.conv2d`` on their whole kernel handle it (``asymmetric_same=True``), the
    others refuse it here, at construction, rather than at the first forward.
    """
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        check_positive_int(name, value)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible "
            f"by groups ({groups})"
        )
    if padding_mode != "zeros":
        raise ValueError(
            f"padding_mode must be 'zeros' (the only mode the dynamic kernels support), got {padding_mode!r}"
        )

    def tup(name: str, value) -> tuple[int, ...]:
        t = tuple(value) if isinstance(value, (tuple, list)) else (value,) * dim
        if len(t) != dim or any(isinstance(v, bool) or not isinstance(v, int) for v in t):
            raise ValueError(f"{name} must be an int or a {dim}-tuple of ints, got {value!r}")
        return t

    kernel = tup("kernel_size", kernel_size)
    for k in kernel:
        check_positive_int("kernel_size", k)
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be an int, a {dim}-tuple, 'same' or 'valid', got {padding!r}")
        pad: Any = padding
    else:
        pad = tup("padding", padding)
    stride_t, dilation_t = tup("stride", stride), tup("dilation", dilation)
    for name, t in (("stride", stride_t), ("dilation", dilation_t)):
        for v in t:
            check_positive_int(name, v)
    if pad == "same" and not asymmetric_same and any(d * (k - 1) % 2 for k, d in zip(kernel, dilation_t)):
        raise ValueError(
            f"padding='same' with kernel_size={kernel} and dilation={dilation_t} needs more padding on one "
            f"side than the other, which this layer does not support; allowed: padding='same' with an odd "
            f"effective kernel (dilation * (kernel_size - 1) even), or explicit padding"
        )
    return dict(kernel_size=kernel, stride=stride_t, padding=pad, dilation=dilation_t)


def dynamic_layers(model: nn.Module) -> Iterator[tuple[str, DynamicLayer]]:
    """Yield ``(qualified name, layer)`` for every dynamic layer of ``model``, in registration order."""
    for name, module in model.named_modules():
        if isinstance(module, DynamicLayer):
            yield name, module


#: The ``attention`` values of the whole-kernel family layers (CondConv, DY-Conv, ODConv): "dynamic" (the
#: method's own input-dependent attention, the default) or "constant" (kwlab's control: learned constants,
#: the same for every sample, through the same sigmoid/softmax and temperature).
ATTENTION_MODES = ("dynamic", "constant")


def check_attention_mode(value: Any, layer: str) -> str:
    """``value`` if it is one of :data:`ATTENTION_MODES`, else a ValueError naming the parameter, the layer
    and the allowed values."""
    if not isinstance(value, str) or value not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES} for {layer}, got {value!r}")
    return value


def check_divisor(value: float, name: str = "temperature") -> float:
    """A softmax divisor must be a finite number > 0 (DY-Conv, ODConv)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(
            f"{name} is a softmax divisor and must be a finite number > 0 (official: 30 -> 1), got {value!r}"
        )
    return float(value)


def check_tau(tau: float, name: str = "tau") -> float:
    """``tau`` as a float, or a ValueError if it is not a finite anneal position in [0, 1]."""
    if isinstance(tau, (bool, str, bytes)):  # float("0.5") and float(True) would pass silently
        raise ValueError(
            f"{name} must be a number in [0, 1] (the anneal position: 1 = start, 0 = end), got "
            f"{type(tau).__name__} {tau!r}"
        )
    try:
        value = float(tau)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"{name} must be a number in [0, 1] (the anneal position: 1 = start, 0 = end), got {tau!r}"
        ) from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{name} must be in [0, 1] (the anneal position: 1 = start, 0 = end), got {tau!r}; "
            "each method maps it to its own temperature (KW: the blend weight tau; DY-Conv/ODConv: "
            "the softmax divisor T = 1 + 29*tau)"
        )
    return value


def set_temperature(model: nn.Module, tau: float) -> nn.Module:
    """Set every dynamic layer of ``model`` to anneal position ``tau`` in [0, 1] (1 = start, 0 = end).

    Each layer maps ``tau`` through its :class:`TemperatureContract` (KW stores ``tau``; DY-Conv and ODConv
    store ``T = 1 + 29 * tau``; CondConv and KernelDNA have no temperature and are left alone). Values
    outside [0, 1], NaN and infinities are refused. Returns the model; works on a single layer too.
    """
    value = check_tau(tau)
    for module in model.modules():
        if isinstance(module, DynamicAttention) and module.temperature_contract.active:
            module.temperature.fill_(module.temperature_contract.value(value))
    return model


def get_temperature(model: nn.Module) -> float | None:
    """The anneal position ``tau`` of the first dynamic layer with a temperature (None: none).

    A model on the meta device has no values: a ValueError says so (move it with ``to_empty`` first)."""
    for module in model.modules():
        if isinstance(module, DynamicAttention) and module.temperature_contract.active:
            if module.temperature.is_meta:
                raise ValueError(
                    "model is on the meta device, so its temperature has no value; allowed: a model with "
                    "real tensors (model.to_empty(device='cpu') and a load, or build it off the meta device)"
                )
            return module.temperature_contract.position(float(module.temperature))
    return None


#: The parts of :func:`parameter_breakdown`, in display order.
BREAKDOWN_PARTS = ("static", "warehouse", "attention", "other")

_STATIC_TYPES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.Bilinear,
)


def _bank_part(module: nn.Module, attr: str) -> str | None:
    """The part of a dynamic layer's (or warehouse's) own parameter ``attr`` (None: not a dynamic one)."""
    kind = type(module).__name__
    if kind == "Warehouse" and attr == "cells":
        return "warehouse"
    if isinstance(module, DynamicLayer):
        # the static bias added after the dynamic conv is a static parameter; every other parameter of
        # the layer itself is its kernel bank (CondConv/DY/OD `weight` and per-kernel bias, KernelDNA's
        # own kernel and its spatial/filter scales)
        if attr == "bias" and not (module.bias is not None and module.bias.dim() > 1):
            return "static"
        return "warehouse"
    return None


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameters of ``model`` by part: ``total``, ``static``, ``warehouse``, ``attention``, ``other``.

    * ``static``: weights and biases of plain conv/linear layers (and the static bias of a dynamic layer);
    * ``warehouse``: KW warehouse cells, and the kernel banks of the family's dynamic layers (CondConv,
      DY-Conv and ODConv ``weight`` and per-kernel bias; KernelDNA's own scales, and its kernel when it
      has no parent -- a parent conv's shared kernel stays ``static``);
    * ``attention``: every parameter inside a :class:`DynamicAttention` module;
    * ``other``: everything else (norms, embeddings, class tokens, ...).

    A parameter shared by several modules is counted once, in the first part that applies in the order
    attention, static (a plain conv/linear owns it), warehouse, other. The parts sum to ``total``, which
    equals :func:`kwlab.count_parameters`.
    """
    in_attention: set[int] = set()
    for module in model.modules():
        if isinstance(module, DynamicAttention):
            in_attention.update(id(m) for m in module.modules())
    rank = {"attention": 0, "static": 1, "warehouse": 2, "other": 3}
    best: dict[int, tuple[str, int]] = {}
    for module in model.modules():
        for attr, p in module._parameters.items():
            if p is None:
                continue
            if id(module) in in_attention:
                part = "attention"
            elif isinstance(module, _STATIC_TYPES):
                part = "static"
            else:
                part = _bank_part(module, attr) or "other"
            old = best.get(id(p))
            if old is None or rank[part] < rank[old[0]]:
                best[id(p)] = (part, p.numel())
    out = dict.fromkeys(BREAKDOWN_PARTS, 0)
    for part, numel in best.values():
        out[part] += numel
    out["total"] = sum(p.numel() for p in model.parameters())
    return {"total": out["total"], **{k: out[k] for k in BREAKDOWN_PARTS}}
