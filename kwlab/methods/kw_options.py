"""KernelWarehouse's conversion options as one typed object: :class:`KWOptions`, validated once and passed
through the selection rules (:mod:`kwlab.methods.kw_rules`), the plan and its guard
(:mod:`kwlab.methods.kw_plan`) and the build (:mod:`kwlab.methods.kernelwarehouse`).

``kwlab.convert(model, "kw", **keywords)``, :func:`kwlab.kernelwarehouse` and
:func:`kwlab.plan_kernelwarehouse` take the same keywords and build a :class:`KWOptions` from them
(:meth:`KWOptions.from_keywords`); :data:`KW_OPTIONS`, the options the method table accepts, is its fields.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from torch import nn

from kwlab.layers.attention import ATTENTION_FUNCTIONS, ATTENTION_NORMS, check_attention_init
from kwlab.layers.base import check_tau
from kwlab.layers.warehouse import WarehouseOptions, with_options
from kwlab.utils import suggest

from .option_types import check_option_types

__all__ = ["KWOptions", "KW_OPTIONS", "KW_PRESETS", "SHARING", "SharingRule", "ATTENTION_SHARE_WARNING"]

SharingRule = Callable[[str, nn.Module], str | None]
SHARING = ("stage", "names", "layer", "network")

#: The official KW presets of the ResNets (configs/resnet18/*.json): budget b = cell_num_ratio and the
#: cell ratios. They are also the presets of a model kwlab does not know
#: (``kwlab.convert(model, "kw", preset=...)``).
KW_PRESETS = {
    "1/4x": dict(budget=0.25, cell_in=0.5, cell_out=0.5),
    "1/2x": dict(budget=0.5, cell_in=0.5, cell_out=0.5),
    "1x": dict(budget=1, cell_in=1.0, cell_out=1.0),
    "2x": dict(budget=2, cell_in=1.0, cell_out=1.0),
    "4x": dict(budget=4, cell_in=1.0, cell_out=1.0),
}

#: :func:`kwlab.kernelwarehouse` warns when the attention holds more than this share of the converted
#: layers' parameters (attention / (warehouse cells + attention), ``plan.totals()["attention_share"]``): the
#: attention then outweighs the kernels it mixes (narrow or depthwise layers; a small CNN).
ATTENTION_SHARE_WARNING = 0.5


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, eq=False)
class KWOptions:
    """Every option of a KernelWarehouse conversion, checked when the object is made.

    Attributes:
        budget: b, cells in a warehouse / cells cut from its layers: 1, 2, 3, 4, ... or 1/2, 1/3, 1/4, ...
        cell_in, cell_out: cell channels as a fraction of the channel gcd of a warehouse's layers (the product
            must be a whole divisor of the gcd; anything else raises when the plan is made).
        sharing: "stage" (traced resolution stages; a kwlab model's official stages), "names" (stage = name
            before the first numeric part), "layer", "network" or a rule
            ``(qualified_name, module) -> key | None``.
        attention, attention_norm, reduction, spatial_partition, zero_cell, nonlocal_basis_ratio: see
            :class:`kwlab.layers.KWAttention` and :class:`kwlab.layers.WarehouseOptions`.
        attention_init: "official" (the official attention init) or "pattern" (kwlab's: the attention alone
            reproduces the init pattern at init, so tau = 0 and tau = 1 start close; see KWAttention).
            ``attention="constant"`` (kwlab's control, :class:`kwlab.layers.attention.KWConstantAttention`):
            the traced stage rule still sizes warehouses by the dynamic head's cost, so the control gets the
            same warehouses as the dynamic net; the plan counts its ``m * (n + 1)`` constants.
        init: "static" (fill cells from the current weights) or "kaiming" (official init).
        warehouse_options: per-warehouse overrides of budget/cell_in/cell_out/spatial_partition/reduction.
        warehouse_order: creation order of the warehouses (official ``weights`` index order).
        include, exclude: glob patterns or module prefixes (or a predicate) on qualified names selecting
            layers to convert (:func:`kwlab.methods.surgery.select`); a pattern that matches no conv/linear
            layer is an error.
        temperature: initial temperature of every layer.
        algorithm: the KW layers' execution algorithm (:func:`kwlab.ops.kw_conv`).
        example_input: the batch the model is traced with (generic models; default: 2 images of 224x224).
        classifier, squeeze_excitation: also convert the classifier head / SE convs (generic models).
        attention_ratio: the traced stage rule keeps a warehouse's attention <= this x its cells.
        max_param_ratio: refuse (ValueError, before allocating) a plan above this x the static parameters,
            or a b < 1 plan that is not smaller than static; None builds any plan.
        max_memory_bytes: refuse a plan whose parameters (at the model's dtype) exceed this many bytes;
            "auto": a quarter of the device's memory (:func:`kwlab.methods.kw_plan.default_memory_budget`);
            None: no limit.
        attention_share_warning: warn (UserWarning) when the attention holds more than this share of the
            converted layers' parameters (``plan.totals()["attention_share"]``); None: never.
    """

    budget: float = 1.0
    cell_in: float = 1.0
    cell_out: float = 1.0
    sharing: str | SharingRule = "stage"
    attention: str = "caf"
    attention_norm: str = "batch"
    reduction: float = 1 / 16
    spatial_partition: bool = True
    zero_cell: bool = True
    nonlocal_basis_ratio: float = 1.0
    attention_init: str = "official"
    init: str = "static"
    warehouse_options: Mapping[str, Mapping] | None = None
    warehouse_order: Iterable[str] | None = None
    include: Any = None
    exclude: Any = None
    temperature: float = 1.0
    algorithm: str = "auto"
    example_input: Any = None
    classifier: bool = False
    squeeze_excitation: bool = False
    attention_ratio: float = 0.5
    max_param_ratio: float | None = 4.0
    max_memory_bytes: float | str | None = "auto"
    attention_share_warning: float | None = ATTENTION_SHARE_WARNING
    _base: WarehouseOptions = field(init=False, repr=False)
    _per_key: dict[str, WarehouseOptions] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_option_types({f.name: getattr(self, f.name) for f in fields(self) if f.init}, "kw")
        base = WarehouseOptions(
            self.budget, self.cell_in, self.cell_out, self.spatial_partition, self.reduction
        )
        object.__setattr__(self, "_base", base)
        per_key = {
            k: with_options(base, v, f"warehouse_options[{k!r}]")
            for k, v in dict(self.warehouse_options or {}).items()
        }
        object.__setattr__(self, "_per_key", per_key)
        if self.warehouse_order is not None:  # an iterator is read once, here
            object.__setattr__(self, "warehouse_order", tuple(self.warehouse_order))
        if not callable(self.sharing) and self.sharing not in SHARING:
            raise ValueError(
                f"sharing must be one of {SHARING} or a callable (name, module) -> key, got {self.sharing!r}"
            )
        if self.attention_norm not in ATTENTION_NORMS:
            raise ValueError(f"attention_norm must be one of {ATTENTION_NORMS}, got {self.attention_norm!r}")
        if not (_number(self.attention_ratio) and self.attention_ratio > 0):
            raise ValueError(f"attention_ratio must be a finite number > 0, got {self.attention_ratio!r}")
        if self.init not in ("static", "kaiming"):
            raise ValueError(f"init must be 'static' or 'kaiming', got {self.init!r}")
        if self.attention not in ATTENTION_FUNCTIONS:
            raise ValueError(f"attention must be one of {ATTENTION_FUNCTIONS}, got {self.attention!r}")
        check_attention_init(self.attention_init, self.attention)
        limit = self.max_param_ratio
        if limit is not None and not (isinstance(limit, (int, float)) and limit > 0 and math.isfinite(limit)):
            raise ValueError(f"max_param_ratio must be a finite number > 0 or None, got {limit!r}")
        memory = self.max_memory_bytes
        if memory is not None and memory != "auto" and not (_number(memory) and memory > 0):
            raise ValueError(
                f"max_memory_bytes must be a number of bytes > 0, 'auto' or None, got {memory!r}"
            )
        share = self.attention_share_warning
        if share is not None and not (_number(share) and 0 <= share <= 1):
            raise ValueError(f"attention_share_warning must be a share in [0, 1] or None, got {share!r}")
        check_tau(self.temperature, "temperature")

    @classmethod
    def from_keywords(cls, options: KWOptions | None = None, /, **keywords: Any) -> KWOptions:
        """``options`` (default: the defaults) with ``keywords`` applied; an unknown keyword is a TypeError
        naming the allowed ones."""
        unknown = sorted(k for k in keywords if k not in KW_OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown KernelWarehouse option(s) {unknown}; allowed: {list(KW_OPTIONS)}."
                f"{suggest(unknown[0], KW_OPTIONS)}"
            )
        if options is None:
            return cls(**keywords)
        if not isinstance(options, cls):
            raise TypeError(f"options must be a KWOptions, got {type(options).__name__}")
        return replace(options, **keywords) if keywords else options

    @property
    def warehouse(self) -> WarehouseOptions:
        """The warehouse options every warehouse gets unless ``warehouse_options`` names it."""
        return self._base

    def warehouse_for(self, key: str) -> WarehouseOptions:
        """The options of warehouse ``key`` (its ``warehouse_options`` entry applied)."""
        return self._per_key.get(key, self._base)

    @property
    def attention_kwargs(self) -> dict[str, Any]:
        """The attention's settings that its parameter count depends on (besides budget and reduction)."""
        return dict(
            norm=self.attention_norm, zero_cell=self.zero_cell, nonlocal_basis_ratio=self.nonlocal_basis_ratio
        )


#: Keyword options of :func:`kwlab.kernelwarehouse` (what presets, ``create_model`` overrides and
#: ``kwlab.convert`` may set): the fields of :class:`KWOptions`.
KW_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(KWOptions) if f.init)
