"""Load checkpoints saved by the official code of each method into kwlab models (and export to it).

* KernelWarehouse (OSVAI/KernelWarehouse): the warehouse mapping below.
* ODConv (OSVAI/ODConv) and the other family layers: kwlab keeps the official parameter names, so keys
  map one to one (kwlab-only buffers are left out).
* KernelDNA (haiduo/KernelDNA): models built by ``create_model(arch, method="kerneldna")`` declare their
  differences from the official layout per module (``official_layout()``, see
  :class:`kwlab.layers.bank.OfficialLayout`): the stacked static tensors (``static_spatial_attn``,
  ``static_filter_attn[1|2|3]``) are split along their first axis into each child's ``spatial_scale`` /
  ``filter_scale``, the SE gates (``se.{i}.se.*``, ``half1.se.se.*``, ``se1.se.*``, ``se3.se.*``) become the
  children's ``attention.*``, and MobileNetV2's ``classifier.1.`` becomes ``classifier.``. A shared parent
  kernel is stored once, under the parent conv, as in the official code.

Temperature: after loading, every dynamic layer is set to anneal position ``tau = 0`` by default, the end
of its method's anneal (``METHODS[m].temperature.end``), which is where each official code evaluates:
KW's blend weight 0, DY-Conv's and ODConv's softmax divisor T = 1; CondConv and KernelDNA have none.

KernelWarehouse mapping from official ``state_dict`` keys to kwlab keys:

* ``warehouse_manager.weights.{i}`` -> ``{owner}.warehouse.cells``: warehouse ``i`` is the i-th warehouse
  the official code created (first reservation order; kwlab plans warehouses in the same order), and its
  owner is the first kwlab layer that draws from it. Shapes are identical: ``(n, o_c, i_c, *k_c)``.
* ``{layer}.attention.{fc1,norm1,fc2,fc3,basis_bias}`` -> the same names (kwlab keeps the official names
  and the official mixture/slot order, so no tensor is permuted).
* ``{linear}.conv.{attention...,bias}`` (the official KWLinear wraps a KWConv1d) -> ``{linear}.{...}``.
* everything else (stem, BatchNorms, classifier, static convs) keeps its name; archs whose module names
  differ from the official ones declare ``official_key_map`` (and its inverse) in their registry entry
  (:class:`kwlab.models.ModelEntry`), which ``create_model`` hands to the model.
* kwlab's ``attention.temperature`` and buffer ``attention.init_pattern`` are not in official checkpoints
  (the official temperature is a Python attribute, its init pattern a plain tensor rebuilt at
  construction); kwlab rebuilds ``init_pattern`` identically and sets the temperature (see above).

A checkpoint of another arch or preset (or of another method) is rejected with the keys and shapes that
differ, one with NaN or infinite weights is refused, and a refused load leaves the model as it was.

A network the official repository does not ship: ``warehouse_manager.weights.{i}`` is mapped to the i-th key
of ``warehouse_order`` (``load_official(..., warehouse_order=[...])``, or the order given at conversion);
without one, a model kwlab did not build with ``create_model`` is refused when two of its warehouses have
cells of the same shape (a positional load could swap them without any shape error).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kwlab.layers.bank import OfficialLayout
from kwlab.layers.base import DynamicAttention, check_tau, set_temperature
from kwlab.layers.kernelwarehouse import KWLinear, _KWConvNd
from kwlab.utils import CheckpointError, load_torch_file

__all__ = ["load_official", "to_official", "OfficialCheckpointError", "read_checkpoint"]

_KWLAB_ONLY = (".attention.temperature", ".attention.init_pattern", ".attention.frozen_alpha")
_WAREHOUSE = re.compile(r"^(?:module\.)?warehouse_manager\.weights\.(\d+)$")


class OfficialCheckpointError(CheckpointError):
    """The checkpoint does not fit the model (another arch or preset, or not an official KW checkpoint), or
    cannot be read (empty, truncated, a directory, or it holds code); a ``ValueError``."""


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read a state_dict from ``path`` with ``torch.load(weights_only=True)``.

    Accepts a bare state_dict or the official training checkpoint (``{"model": ..., "args": Namespace, ...}``;
    ``model_ema`` is not used unless it is the only weights entry).

    Raises:
        FileNotFoundError: no such file.
        OfficialCheckpointError: a directory, an empty or truncated file, or a file that holds code (refused;
            the weights-only check is never turned off).
    """
    try:
        obj = load_torch_file(path, map_location="cpu", allowed=[argparse.Namespace])
    except CheckpointError as err:  # empty, truncated, a directory, or a pickle that calls code
        raise OfficialCheckpointError(str(err)) from None
    return _state_dict_of(obj, str(path))


def _state_dict_of(obj: Any, where: str) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_ema"):
            if key in obj and isinstance(obj[key], Mapping):
                return dict(obj[key])
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
    raise OfficialCheckpointError(f"{where} holds no state_dict (expected tensors, or a dict with 'model')")


def _owners(model: nn.Module, warehouse_order=None) -> tuple[list[str], dict[str, str]]:
    """Warehouse keys in official order (``warehouse_order``, else the plan's) and, per key, the qualified
    name of the owning layer."""
    owners: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, _KWConvNd) and "warehouse" in module._modules:
            owners.setdefault(module.warehouse.key, name)
    if warehouse_order is not None:
        return list(warehouse_order), owners
    order = getattr(model, "kw_warehouse_order", None) or list(owners)
    return list(order), owners


def _check_warehouse_order(model: nn.Module, warehouse_order) -> list[str] | None:
    """``warehouse_order`` as a list of the model's warehouse keys (each once), or a clear error."""
    if warehouse_order is None:
        return None
    keys = list(_owners(model)[1])
    if isinstance(warehouse_order, str) or not all(isinstance(k, str) for k in warehouse_order):
        raise ValueError(f"warehouse_order must be a list of warehouse keys, got {warehouse_order!r}")
    order = list(warehouse_order)
    if sorted(order) != sorted(keys):
        raise ValueError(
            f"warehouse_order must list each warehouse of the model once, in the order the official code "
            f"created them; the model's warehouses are {keys}, got {order}"
        )
    return order


def _ambiguous_warehouses(model: nn.Module) -> list[tuple[str, str, tuple[int, ...]]]:
    """Pairs of warehouses whose cells have the same shape: a positional load could swap them silently."""
    seen: dict[tuple[int, ...], str] = {}
    pairs = []
    _, owners = _owners(model)
    for key, owner in owners.items():
        shape = tuple(model.get_submodule(owner).warehouse.cells.shape)
        if shape in seen:
            pairs.append((seen[shape], key, shape))
        else:
            seen[shape] = key
    return pairs


def _order_is_known(model: nn.Module) -> bool:
    """True for a model whose warehouse order is the official one: built by ``create_model`` for a
    registered arch (its stage rule follows the official creation order) or converted with an explicit
    ``warehouse_order``."""
    given = bool(getattr(model, "kw_warehouse_order_given", False))
    return given or bool(getattr(model, "kwlab_config", None))


def _arch_map(model: nn.Module, name: str):
    """The official map ``name`` ("key_map", "key_unmap", "tensor_map") that ``model``'s arch declares in its
    registry entry (``create_model`` attaches them as ``model.kwlab_official_maps``), or None."""
    return (getattr(model, "kwlab_official_maps", None) or {}).get(name)


def _arch_maps(model: nn.Module):
    """The arch's ``official_key_map`` and ``official_tensor_map`` (None where it has none)."""
    return _arch_map(model, "key_map"), _arch_map(model, "tensor_map")


def _map_keys(model: nn.Module, official: Mapping[str, Tensor], warehouse_order=None) -> dict[str, Tensor]:
    order, owners = _owners(model, warehouse_order)
    linears = {n for n, m in model.named_modules() if isinstance(m, KWLinear)}
    arch_map, tensor_map = _arch_maps(model)
    mapped: dict[str, Tensor] = {}
    for key, value in official.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        m = _WAREHOUSE.match(key)
        if m:
            i = int(m.group(1))
            if i >= len(order):
                new = f"<warehouse {i}: the model has only {len(order)} warehouses>"
            else:
                new = f"{owners[order[i]]}.warehouse.cells"
        else:
            new = arch_map(key) if arch_map is not None else key
            for lin in linears:
                if new.startswith(f"{lin}.conv."):
                    new = f"{lin}.{new[len(lin) + 6 :]}"
                    break
        mapped[new] = tensor_map(new, value) if tensor_map is not None else value
    return mapped


def _layout_tables(model: nn.Module) -> tuple[dict[str, tuple[str, ...]], list[tuple[str, str]]]:
    """Full-name stacks and renames of every module of ``model`` that declares an official layout."""
    stacks: dict[str, tuple[str, ...]] = {}
    renames: list[tuple[str, str]] = []
    for name, module in model.named_modules():
        layout = getattr(module, "official_layout", None)
        if not callable(layout):
            continue
        spec: OfficialLayout = layout()
        p = f"{name}." if name else ""
        stacks.update({p + k: tuple(p + c for c in kids) for k, kids in spec.stacks.items()})
        renames += [(p + off, p + own) for off, own in spec.renames]
    return stacks, renames


def _rename(key: str, renames: list[tuple[str, str]], reverse: bool = False) -> str:
    src, dst = (1, 0) if reverse else (0, 1)
    for pair in sorted(renames, key=lambda r: -len(r[src])):
        if key.startswith(pair[src]):
            return pair[dst] + key[len(pair[src]) :]
    return key


def _map_layout_keys(
    model: nn.Module, official: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], list[str]]:
    """Official KernelDNA keys -> kwlab keys (stacks split); also the stacked tensors whose shape is wrong."""
    stacks, renames = _layout_tables(model)
    mapped: dict[str, Tensor] = {}
    bad: list[str] = []
    for key, value in official.items():
        key = key.removeprefix("module.")
        kids = stacks.get(key)
        if kids is None:
            mapped[_rename(key, renames)] = value
        elif value.dim() == 0 or value.shape[0] != len(kids):
            bad.append(f"{key}: checkpoint {tuple(value.shape)}, model stacks {len(kids)} children")
        else:
            mapped.update({kid: value[i] for i, kid in enumerate(kids)})
    return mapped, bad


def _eval_position(model: nn.Module) -> float:
    """The anneal position of the method's evaluation temperature (its contract's ``end``): 0 for every
    method of the table."""
    positions = {
        m.temperature_contract.position(m.temperature_contract.end)
        for m in model.modules()
        if isinstance(m, DynamicAttention) and m.temperature_contract.active
    }
    if len(positions) > 1:  # pragma: no cover - every contract ends at tau = 0
        raise ValueError(f"the model's methods evaluate at different anneal positions: {sorted(positions)}")
    return positions.pop() if positions else 0.0


def load_official(
    model: nn.Module,
    state_dict_or_path: Mapping[str, Tensor] | str | Path,
    temperature: float | None | str = "eval",
    *,
    warehouse_order: Sequence[str] | None = None,
) -> nn.Module:
    """Load an official checkpoint (KW, ODConv, KernelDNA, ...) into a kwlab model of the same arch/preset.

    Args:
        model: e.g. ``kwlab.create_model("resnet18", method="kw", preset="1x")`` or ``method="kerneldna"``;
            or a network the official repository does not ship, converted with the official model's
            settings (README, "Loading the authors' checkpoints").
        state_dict_or_path: an official state_dict (keys with or without ``module.``; raw, or under
            ``model`` / ``state_dict``), or the path of a checkpoint file (read with ``weights_only=True``).
        temperature: anneal position ``tau`` in [0, 1] to set after loading; "eval" (default): each method's
            evaluation temperature from its contract (the end of the anneal, tau = 0: KW blend 0, DY-Conv and
            ODConv T = 1); None leaves the temperature unchanged.
        warehouse_order: KW: the model's warehouse keys (``kwlab.warehouses(model)``) in the order the
            official code created them (``warehouse_manager.weights.{i}`` is the i-th). Needed for a network
            kwlab does not build itself when two of its warehouses have cells of the same shape (a
            positional load could swap them without any shape error); default: the conversion's order.
    Returns:
        The model, with its weights replaced.
    Raises:
        OfficialCheckpointError: the checkpoint belongs to another arch or preset (the message lists the keys
            and shapes that differ), holds NaN or infinite weights, or its warehouses could load into the
            wrong warehouse (a custom network without ``warehouse_order``). The model is unchanged.
    """
    if isinstance(temperature, str) and temperature != "eval":
        raise ValueError(f"temperature must be 'eval', None or a tau in [0, 1], got {temperature!r}")
    if temperature is not None and not isinstance(temperature, str):
        check_tau(temperature, "temperature")
    order = _check_warehouse_order(model, warehouse_order)
    if isinstance(state_dict_or_path, (str, Path)):
        official = read_checkpoint(state_dict_or_path)
    else:
        official = _state_dict_of(state_dict_or_path, "the given object")
    stacks, renames = _layout_tables(model)
    if stacks or renames:
        mapped, bad_stacks = _map_layout_keys(model, official)
    else:
        mapped, bad_stacks = _map_keys(model, official, order), []
    own = {k: v for k, v in model.state_dict().items() if not k.endswith(_KWLAB_ONLY)}
    missing = [k for k in own if k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    shapes = bad_stacks + [
        f"{k}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in mapped and tuple(mapped[k].shape) != tuple(own[k].shape)
    ]
    known = _order_is_known(model)
    if missing or unexpected or shapes:
        cfg = getattr(model, "kwlab_config", {})
        built = f"arch={cfg.get('arch')!r}, preset={cfg.get('preset')!r}" if cfg else "this model"
        n_wh = sum(1 for k in official if _WAREHOUSE.match(k.removeprefix("module.")))
        fix = (
            "Build the model with the arch and preset the checkpoint was trained with."
            if cfg
            else "Convert the network with the settings of the official model (the same layers KW, budget "
            "and cell ratios, kwlab.convert(..., include=[...])), and pass warehouse_order=[...] (the "
            "warehouse keys in the order the official code created them) if its warehouses were created "
            "in another order."
        )
        lines = [
            f"checkpoint does not match the model built with {built} "
            f"(checkpoint: {len(official)} tensors, {n_wh} warehouses; model: {len(_owners(model)[0])} "
            f"warehouses). {fix}"
        ]
        for title, items in (
            ("shape differs", shapes),
            ("missing from checkpoint", missing),
            ("not in the model", unexpected),
        ):
            if items:
                lines.append(
                    f"{title} ({len(items)}): " + "; ".join(items[:8]) + (" ..." if len(items) > 8 else "")
                )
        raise OfficialCheckpointError("\n".join(lines))
    swaps = _ambiguous_warehouses(model) if order is None and not known else []
    if swaps:
        a, b, shape = swaps[0]
        raise OfficialCheckpointError(
            f"refusing to load by position: warehouses {a!r} and {b!r} of this network have cells of the "
            f"same shape {shape}, so the checkpoint's warehouse_manager.weights.{{i}} could load into the "
            f"wrong one without any error. Pass warehouse_order=[...] with the model's warehouse keys "
            f"{list(_owners(model)[1])} in the order the official code created its warehouses (for a "
            f"network kwlab builds, create_model knows that order)."
        )
    bad = [k for k in own if mapped[k].is_floating_point() and not torch.isfinite(mapped[k]).all()]
    if bad:
        raise OfficialCheckpointError(
            f"the checkpoint holds NaN or infinite values in {len(bad)} tensor(s): "
            + ", ".join(bad[:8])
            + (" ..." if len(bad) > 8 else "")
            + " (a diverged run?); nothing was loaded"
        )
    model.load_state_dict({**model.state_dict(), **{k: mapped[k] for k in own}})
    if isinstance(temperature, str):
        temperature = _eval_position(model)
    if temperature is not None:
        set_temperature(model, temperature)
    return model


def to_official(model: nn.Module) -> dict[str, Tensor]:
    """The inverse mapping: a kwlab model's weights as an official-layout state_dict (KW, the family layers,
    and KernelDNA models from ``create_model(arch, method="kerneldna")``)."""
    stacks, renames = _layout_tables(model)
    if stacks or renames:
        return _to_official_layout(model, stacks, renames)
    order, owners = _owners(model)
    owner_key = {f"{owners[k]}.warehouse.cells": i for i, k in enumerate(order)}
    linears = {n for n, m in model.named_modules() if isinstance(m, KWLinear)}
    unmap = _arch_map(model, "key_unmap")
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if key.endswith(_KWLAB_ONLY):
            continue
        if key in owner_key:
            out[f"warehouse_manager.weights.{owner_key[key]}"] = value
            continue
        for lin in linears:
            if key.startswith(lin + ".attention.") or key == lin + ".bias":
                key = f"{lin}.conv.{key[len(lin) + 1 :]}"
                break
        out[unmap(key, model) if unmap is not None else key] = value
    return out


def _to_official_layout(
    model: nn.Module, stacks: Mapping[str, tuple[str, ...]], renames: list[tuple[str, str]]
) -> dict[str, Tensor]:
    own = {k: v for k, v in model.state_dict().items() if not k.endswith(_KWLAB_ONLY)}
    in_stack = {kid for kids in stacks.values() for kid in kids}
    out = {_rename(k, renames, reverse=True): v for k, v in own.items() if k not in in_stack}
    out.update({key: torch.stack([own[kid] for kid in kids]) for key, kids in stacks.items()})
    return out
