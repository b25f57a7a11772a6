"""Warehouse planning: which cells exist, their shape, and which layer owns which cells.

Planning is a pure function of the layers' shapes and the sharing keys, so it can be inspected (and
tested against the paper's parameter counts) without building a network. It reproduces the official
``Warehouse_Manager.store()`` and ``allocate()``:

* the cell shape of a warehouse is ``(o_c, i_c, *k_c)`` with ``o_c = max(floor(gcd(O) * cell_out), 1)``,
  ``i_c = max(floor(gcd(I/g) * cell_in), 1)`` over its layers, and ``k_c`` all ones with spatial
  partition (else the common kernel size);
* layer ``l`` is cut into ``m_l = (O/o_c) * ((I/g)/i_c) * (prod k / prod k_c)`` mixtures;
* the warehouse holds ``n = max(floor(budget * sum_l m_l), 1)`` cells;
* walking the layers in registration order, each layer *owns* the next cells: ``m_l * b`` of them for
  a whole budget ``b >= 1``, and for ``b = 1/q`` one cell per mixture ``j`` with
  ``j % q == (j // q) % q`` (the other mixtures start at the zero cell). The owned cells are where the
  one-hot init pattern points, and they are initialised with kaiming-normal (fan_out) over the slice.

Differences from the official code, on purpose: channel counts that the cell does not divide, a
budget that is neither whole nor 1/q, and ownership that does not add up to ``n`` raise a clear
``ValueError`` (the official code floors silently or fails an ``assert``).
Explained in notebooks/02_kernelwarehouse_anatomy.ipynb.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction

from ..ops.layout import CellLayout

__all__ = [
    "LayerSpec",
    "WarehouseOptions",
    "LayerPlan",
    "WarehousePlan",
    "KWPlan",
    "plan_warehouses",
    "check_budget",
    "owned_cell_count",
    "owned_cells",
    "allowed_ratios",
    "with_options",
    "WAREHOUSE_OPTION_NAMES",
    "warehouse_cell_shape",
]


@dataclass(frozen=True)
class LayerSpec:
    """Shape of one layer that will draw its kernel from a warehouse."""

    name: str
    kind: str  # "conv1d" | "conv2d" | "conv3d" | "linear"
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    groups: int = 1

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_per_group, *self.kernel_size)

    @property
    def weight_numel(self) -> int:
        return math.prod(self.weight_shape)


@dataclass(frozen=True)
class WarehouseOptions:
    """Settings of one warehouse (official names in brackets).

    Args:
        budget: b [cell_num_ratio]: cells in the warehouse / cells cut from its layers. A whole number
            >= 1, or 1/q (1/2, 1/4, ...).
        cell_in: [cell_inplane_ratio] input channels of a cell / gcd of the layers' input channels.
        cell_out: [cell_outplane_ratio] output channels of a cell / gcd of the layers' output channels.
        spatial_partition: cut kernels into 1x1 spatial cells (else a cell spans the whole kernel).
        reduction: hidden width of the attention MLP = max(floor(in_channels * reduction), 16).
    """

    budget: float = 1.0
    cell_in: float = 1.0
    cell_out: float = 1.0
    spatial_partition: bool = True
    reduction: float = 1 / 16

    def __post_init__(self) -> None:
        check_budget(self.budget)
        for name in ("cell_in", "cell_out", "reduction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)) or value != value:
                raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
        for name in ("cell_in", "cell_out"):
            value = getattr(self, name)
            if not (0 < value <= 1):
                raise ValueError(f"{name} must be in (0, 1] (a fraction of the channel gcd), got {value}")
        if not (0 < self.reduction <= 1):
            raise ValueError(f"reduction must be in (0, 1], got {self.reduction}")


def check_budget(budget: float) -> Fraction:
    """Validate a budget b: a whole number >= 1 or 1/q for a whole q >= 2. Returns it as a Fraction."""
    if (
        not isinstance(budget, (int, float, Fraction))
        or isinstance(budget, bool)
        or not math.isfinite(budget)
        or not budget > 0
    ):
        raise ValueError(
            f"budget must be a finite positive number (1, 2, 4, ... or 1/2, 1/4, ...), got {budget!r}"
        )
    if budget >= 1:
        if float(budget) != int(budget):
            raise ValueError(
                f"budget must be a whole number when >= 1 (1, 2, 3, 4, ...) or 1/q when < 1 "
                f"(1/2, 1/3, 1/4, ...); got {budget}. The official code only supports these."
            )
        return Fraction(int(budget))
    q = 1.0 / float(budget)
    if abs(q - round(q)) > 1e-6:
        raise ValueError(f"budget below 1 must be 1/q for a whole q (0.5, 0.333.., 0.25, ...), got {budget}")
    return Fraction(1, int(round(q)))


def owned_cell_count(num_mixtures: int, budget: float) -> int:
    """Cells a layer of ``num_mixtures`` mixtures owns at budget b (where its init pattern points)."""
    b = check_budget(budget)
    if b >= 1:
        return num_mixtures * int(b)
    q = b.denominator
    return sum(1 for j in range(num_mixtures) if j % q == (j // q) % q)


def owned_cells(num_mixtures: int, start_cell: int, budget: float) -> tuple[list[int], list[int]]:
    """``(mixtures, cells)``: mixture ``j`` of a layer points its init pattern at cell ``cells[i]``
    for ``j = mixtures[i]``; the other mixtures point at the zero cell (b = 1/q)."""
    b = check_budget(budget)
    if b >= 1:
        step = int(b)
        return list(range(num_mixtures)), [start_cell + j * step for j in range(num_mixtures)]
    q = b.denominator
    rows = [j for j in range(num_mixtures) if j % q == (j // q) % q]
    return rows, [start_cell + i for i in range(len(rows))]


@dataclass(frozen=True)
class LayerPlan:
    """Where one layer sits in its warehouse."""

    spec: LayerSpec
    warehouse: str
    layout: CellLayout
    start_cell: int  # first owned cell
    end_cell: int  # one past the last owned cell

    @property
    def num_mixtures(self) -> int:
        return self.layout.num_mixtures


@dataclass
class WarehousePlan:
    """One warehouse: its cell shape, its size and the layers (in allocation order) that share it."""

    key: str
    cell_shape: tuple[int, ...]
    num_cells: int
    options: WarehouseOptions
    layers: list[str] = field(default_factory=list)

    @property
    def num_parameters(self) -> int:
        return self.num_cells * math.prod(self.cell_shape)


@dataclass
class KWPlan:
    """The whole plan: warehouses in creation order and layers in allocation order.

    Filled by :func:`kwlab.plan_kernelwarehouse` (:func:`plan_warehouses` alone leaves them empty):
    ``attention`` (warehouse -> attention parameters of its layers, by formula), ``left_static`` (layer ->
    why it stays static), ``static_parameters`` (the whole static model), ``element_size`` (bytes per
    parameter at the model's dtype). ``warehouse_table()`` has one row per warehouse, ``totals()`` the sums
    (with ``converted_bytes``, the converted model's parameters in bytes, and ``attention_share``, the
    attention's part of the converted layers' parameters: attention / (warehouse cells + attention)),
    ``frame()`` both as a pandas DataFrame.
    """

    warehouses: dict[str, WarehousePlan]
    layers: dict[str, LayerPlan]
    attention: dict[str, int] = field(default_factory=dict)
    left_static: dict[str, str] = field(default_factory=dict)
    static_parameters: int = 0
    element_size: int = 4

    def replaced_parameters(self, key: str) -> int:
        """Weights of the static layers that warehouse ``key`` replaces."""
        return sum(self.layers[n].spec.weight_numel for n in self.warehouses[key].layers)

    def warehouse_table(self) -> list[dict]:
        """One row per warehouse: its layers, cell shape, mixtures m, cells n and parameter counts."""
        rows = []
        for key, wp in self.warehouses.items():
            members = [self.layers[n] for n in wp.layers]
            replaced = self.replaced_parameters(key)
            cost = wp.num_parameters + self.attention.get(key, 0)
            rows.append(
                dict(
                    warehouse=key,
                    layers=len(members),
                    first=wp.layers[0],
                    last=wp.layers[-1],
                    cell_shape=wp.cell_shape,
                    m=sum(lp.num_mixtures for lp in members),
                    n=wp.num_cells,
                    budget=wp.options.budget,
                    static_params=replaced,
                    warehouse_params=wp.num_parameters,
                    attention_params=self.attention.get(key, 0),
                    attention_share=self.attention.get(key, 0) / cost if cost else 0.0,
                    ratio=cost / replaced if replaced else float("inf"),
                )
            )
        return rows

    def totals(self) -> dict:
        """Whole-model sums: the static model, the converted model (planned), and its parts."""
        replaced = sum(lp.spec.weight_numel for lp in self.layers.values())
        cells = sum(wp.num_parameters for wp in self.warehouses.values())
        attention = sum(self.attention.values())
        converted = self.static_parameters - replaced + cells + attention
        return dict(
            static_model=self.static_parameters,
            converted_model=converted,
            ratio=converted / self.static_parameters if self.static_parameters else float("nan"),
            converted_bytes=converted * self.element_size,
            warehouses=len(self.warehouses),
            converted_layers=len(self.layers),
            static_layers=len(self.left_static),
            replaced=replaced,
            warehouse=cells,
            attention=attention,
            attention_share=attention / (cells + attention) if cells + attention else 0.0,
        )

    def frame(self):
        """A pandas DataFrame of :meth:`warehouse_table`, indexed by warehouse, with :meth:`totals` in its
        ``attrs["totals"]`` (needs pandas, the "lab" extra)."""
        import pandas as pd  # noqa: PLC0415 - optional dependency

        frame = pd.DataFrame(self.warehouse_table()).set_index("warehouse")
        frame.attrs["totals"] = self.totals()
        return frame

    def summary(self, top: int = 5) -> str:
        """The totals and the ``top`` warehouses with the largest planned size, as text."""
        t = self.totals()
        rows = sorted(
            self.warehouse_table(), key=lambda r: r["warehouse_params"] + r["attention_params"], reverse=True
        )
        lines = [
            f"planned {t['converted_model']:,} parameters ({t['converted_bytes'] / 1e9:.3g} GB) = "
            f"{t['ratio']:.3g}x the static model's {t['static_model']:,} ({t['warehouses']} warehouses "
            f"over {t['converted_layers']} layers, "
            f"{t['static_layers']} layers left static; attention {t['attention_share']:.0%} of the "
            f"converted layers' parameters)"
        ]
        for r in rows[:top]:
            lines.append(
                f"  {r['warehouse']!r}: {r['layers']} layers ({r['first']} .. {r['last']}), "
                f"cell {r['cell_shape']}, "
                f"m={r['m']}, n={r['n']}: {r['warehouse_params']:,} cell + "
                f"{r['attention_params']:,} attention "
                f"parameters for {r['static_params']:,} static ({r['ratio']:.3g}x)"
            )
        return "\n".join(lines)

    def table(self) -> list[dict]:
        """One row per layer (a list of dicts; ``pandas.DataFrame(plan.table())`` for a table)."""
        rows = []
        for lp in self.layers.values():
            wp = self.warehouses[lp.warehouse]
            rows.append(
                dict(
                    layer=lp.spec.name,
                    warehouse=lp.warehouse,
                    kind=lp.spec.kind,
                    weight_shape=lp.spec.weight_shape,
                    cell_shape=wp.cell_shape,
                    num_mixtures=lp.num_mixtures,
                    num_cells=wp.num_cells,
                    budget=wp.options.budget,
                    start_cell=lp.start_cell,
                    end_cell=lp.end_cell,
                )
            )
        return rows


def allowed_ratios(gcd: int) -> list[Fraction]:
    """The cell ratios that give a whole divisor of a channel gcd: d / gcd for every divisor d."""
    return sorted({Fraction(d, gcd) for d in range(1, gcd + 1) if gcd % d == 0})


def _cell_channels(key: str, param: str, ratio: float, gcd: int, specs: list[LayerSpec]) -> int:
    """``gcd * ratio`` when it is a whole divisor of ``gcd``; else a ValueError (never floored)."""
    exact = gcd * float(ratio)
    cell = round(exact)
    if cell >= 1 and abs(exact - cell) <= 1e-6 * max(gcd, 1) and gcd % cell == 0:
        return cell
    side = "output" if param == "cell_out" else "input (per group)"
    allowed = allowed_ratios(gcd)
    shown = ", ".join(str(a) for a in allowed[:12]) + (", ..." if len(allowed) > 12 else "")
    names = ", ".join(repr(sp.name) for sp in specs[:3]) + (", ..." if len(specs) > 3 else "")
    raise ValueError(
        f"{param}={ratio} gives cells of {exact:g} channels, which is not a whole divisor of {gcd}, the gcd "
        f"of the {side} channels of warehouse {key!r} (layers {names}). Allowed {param} values here: {shown}."
    )


def _kind_dim(kind: str) -> int:
    return 1 if kind == "linear" else int(kind[4])


def warehouse_cell_shape(key: str, specs: list[LayerSpec], opts: WarehouseOptions) -> tuple[int, ...]:
    """The cell shape of a warehouse holding ``specs`` (a ValueError if they cannot share one)."""
    return _cell_shape(key, list(specs), opts)


def _cell_shape(key: str, specs: list[LayerSpec], opts: WarehouseOptions) -> tuple[int, ...]:
    kinds = {s.kind for s in specs}
    if len({_kind_dim(k) for k in kinds}) > 1 or ("linear" in kinds and len(kinds) > 1):
        detail = ", ".join(f"{s.name} ({s.kind})" for s in specs[:6])
        raise ValueError(
            f"sharing rule puts layers whose cell shapes cannot agree into warehouse {key!r}: "
            f"{detail}. A warehouse can only hold layers of one kind (conv1d, conv2d, conv3d or "
            f"linear); give them different keys in the sharing rule."
        )
    gcd_o = math.gcd(*[s.out_channels for s in specs])
    gcd_i = math.gcd(*[s.in_per_group for s in specs])
    cell_out = _cell_channels(key, "cell_out", opts.cell_out, gcd_o, specs)
    cell_in = _cell_channels(key, "cell_in", opts.cell_in, gcd_i, specs)
    dim = len(specs[0].kernel_size)
    if opts.spatial_partition:
        cell_kernel = (1,) * dim
    else:
        sizes = {s.kernel_size for s in specs}
        if len(sizes) > 1:
            raise ValueError(
                f"spatial_partition=False needs one kernel size per warehouse, but warehouse {key!r} "
                f"holds kernel sizes {sorted(sizes)}; use spatial_partition=True or a sharing rule "
                f"that separates them."
            )
        cell_kernel = specs[0].kernel_size
    for s in specs:
        for param, total, cell in (
            ("cell_out", s.out_channels, cell_out),
            ("cell_in", s.in_per_group, cell_in),
        ):
            if total % cell:
                gcd = gcd_o if param == "cell_out" else gcd_i
                allowed = sorted({Fraction(d, gcd) for d in range(1, gcd + 1) if gcd % d == 0})
                raise ValueError(
                    f"{param}={getattr(opts, param)} gives cells of {cell} channels, which do not "
                    f"divide the {total} channels of layer {s.name!r} (warehouse {key!r}). "
                    f"Allowed {param} values here: {', '.join(str(a) for a in allowed)}."
                )
    return (cell_out, cell_in, *cell_kernel)


def plan_warehouses(
    specs: Iterable[LayerSpec],
    keys: Iterable[str],
    options: WarehouseOptions | Mapping[str, WarehouseOptions] = WarehouseOptions(),
    order: Iterable[str] | None = None,
) -> KWPlan:
    """Plan warehouses for layers given in allocation (registration) order.

    Args:
        specs: the layers, in the order their cells are allocated.
        keys: the warehouse key of each layer (same length as ``specs``).
        options: one :class:`WarehouseOptions` for all warehouses, or a mapping key -> options
            (missing keys use the defaults).
        order: warehouse creation order (default: order of first appearance). Only changes the
            order of ``plan.warehouses``, which is the order of the official ``weights`` list.
    """
    specs, keys = list(specs), list(keys)
    if len(specs) != len(keys):
        raise ValueError("specs and keys must have the same length")
    if not specs:
        raise ValueError("no layers to plan: the sharing rule and include/exclude matched no layer")
    groups: dict[str, list[LayerSpec]] = {}
    for spec, key in zip(specs, keys):
        groups.setdefault(key, []).append(spec)
    if order is not None:
        order = list(order)
        missing = set(groups) - set(order)
        if missing:
            raise ValueError(f"warehouse order misses keys {sorted(missing)}")
        groups = {k: groups[k] for k in order if k in groups}

    def opts_for(key: str) -> WarehouseOptions:
        if isinstance(options, WarehouseOptions):
            return options
        return options.get(key, WarehouseOptions())

    warehouses: dict[str, WarehousePlan] = {}
    layouts: dict[str, CellLayout] = {}
    for key, members in groups.items():
        opts = opts_for(key)
        cell_shape = _cell_shape(key, members, opts)
        total = 0
        for s in members:
            layout = CellLayout(
                s.out_channels,
                s.in_per_group,
                s.kernel_size,
                cell_shape[0],
                cell_shape[1],
                tuple(cell_shape[2:]),
            )
            layouts[s.name] = layout
            total += layout.num_mixtures
        num_cells = max(int(total * float(opts.budget)), 1)
        warehouses[key] = WarehousePlan(key, cell_shape, num_cells, opts, [s.name for s in members])

    cursor = {key: 0 for key in warehouses}
    layers: dict[str, LayerPlan] = {}
    for spec, key in zip(specs, keys):
        layout = layouts[spec.name]
        start = cursor[key]
        end = start + owned_cell_count(layout.num_mixtures, warehouses[key].options.budget)
        cursor[key] = end
        layers[spec.name] = LayerPlan(spec, key, layout, start, end)
    for key, wp in warehouses.items():
        if cursor[key] != wp.num_cells:
            raise ValueError(
                f"budget={wp.options.budget} is not allowed for warehouse {key!r} with "
                f"cell_in={wp.options.cell_in} and cell_out={wp.options.cell_out}: its layers own "
                f"{cursor[key]} cells but it holds {wp.num_cells}. With b = 1/q every layer needs "
                f"q*q-aligned mixtures; use a whole budget (1, 2, 4), or cell ratios of 1/q (e.g. budget=0.5 "
                f"with cell_in=cell_out=0.5, budget=0.25 with 0.5/0.5 as the official presets do)."
            )
    return KWPlan(warehouses, layers)


#: The settings a warehouse takes (:class:`WarehouseOptions` fields), e.g. in ``warehouse_options``.
WAREHOUSE_OPTION_NAMES = ("budget", "cell_in", "cell_out", "spatial_partition", "reduction")


def with_options(
    opts: WarehouseOptions, changes: Mapping | None = None, where: str = "", **more
) -> WarehouseOptions:
    """A copy of ``opts`` with ``changes`` applied (validated); unknown names raise a ValueError."""
    changes = {**(changes or {}), **more}
    if not isinstance(changes, Mapping):
        raise ValueError(f"{where or 'warehouse options'} must be a mapping, got {type(changes).__name__}")
    unknown = sorted(set(changes) - set(WAREHOUSE_OPTION_NAMES))
    if unknown:
        raise ValueError(
            f"{where or 'warehouse options'} has unknown keys {unknown}; allowed keys: "
            f"{', '.join(WAREHOUSE_OPTION_NAMES)}"
        )
    return replace(opts, **changes)
