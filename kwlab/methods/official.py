"""Load checkpoints saved by the official KernelWarehouse code (OSVAI/KernelWarehouse) into kwlab models.

Mapping from official ``state_dict`` keys to kwlab keys:

* ``warehouse_manager.weights.{i}`` -> ``{owner}.warehouse.cells``: warehouse ``i`` is the i-th warehouse
  the official code created (first reservation order; kwlab plans warehouses in the same order), and its
  owner is the first kwlab layer that draws from it. Shapes are identical: ``(n, o_c, i_c, *k_c)``.
* ``{layer}.attention.{fc1,norm1,fc2,fc3,basis_bias}`` -> the same names (kwlab keeps the official names
  and the official mixture/slot order, so no tensor is permuted).
* ``{linear}.conv.{attention...,bias}`` (the official KWLinear wraps a KWConv1d) -> ``{linear}.{...}``.
* everything else (stem, BatchNorms, classifier, static convs) keeps its name; archs whose module names
  differ from the official ones provide ``official_key_map`` in their model module.
* kwlab's buffers ``attention.temperature`` and ``attention.init_pattern`` are not in official checkpoints
  (the official temperature is a Python attribute, its init pattern a plain tensor rebuilt at
  construction); kwlab rebuilds ``init_pattern`` identically and sets the temperature (default 0, the
  value after the official anneal, which evaluation reuses).

A checkpoint of another arch or preset is rejected with the keys and shapes that differ.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from kwlab.layers.base import set_temperature
from kwlab.layers.kernelwarehouse import KWLinear, _KWConvNd
from kwlab.utils import CheckpointError, load_torch_file

__all__ = ["load_official", "to_official", "OfficialCheckpointError", "read_checkpoint"]

_KWLAB_ONLY = (".attention.temperature", ".attention.init_pattern")
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


def _owners(model: nn.Module) -> tuple[list[str], dict[str, str]]:
    """Warehouse keys in plan order and, per key, the qualified name of the owning layer."""
    owners: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, _KWConvNd) and "warehouse" in module._modules:
            owners.setdefault(module.warehouse.key, name)
    order = getattr(model, "kw_warehouse_order", None) or list(owners)
    return list(order), owners


def _arch_module_attr(model: nn.Module, name: str):
    """Attribute ``name`` of the model module of ``model``'s arch (MobileNetV2, ConvNeXt), or None."""
    arch = (getattr(model, "kwlab_config", None) or {}).get("arch", "")
    for mod_name in ("mobilenetv2", "convnext"):
        if arch.startswith(mod_name):
            return getattr(importlib.import_module(f"kwlab.models.{mod_name}"), name, None)
    return None


def _arch_maps(model: nn.Module):
    """The arch module's ``official_key_map`` and ``official_tensor_map`` (None where it has none)."""
    return _arch_module_attr(model, "official_key_map"), _arch_module_attr(model, "official_tensor_map")


def _map_keys(model: nn.Module, official: Mapping[str, Tensor]) -> dict[str, Tensor]:
    order, owners = _owners(model)
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


def load_official(
    model: nn.Module, state_dict_or_path: Mapping[str, Tensor] | str | Path, temperature: float | None = 0.0
) -> nn.Module:
    """Load an official KernelWarehouse checkpoint into a kwlab model built with the same arch and preset.

    Args:
        model: e.g. ``kwlab.create_model("resnet18", method="kw", preset="1x")``.
        state_dict_or_path: an official state_dict, or the path of a checkpoint file.
        temperature: temperature to set after loading (default 0: the value after the official anneal);
            None leaves it unchanged.
    Returns:
        The model, with its weights replaced.
    Raises:
        OfficialCheckpointError: the checkpoint belongs to another arch or preset; the message lists the keys
            and shapes that differ.
    """
    if isinstance(state_dict_or_path, (str, Path)):
        official = read_checkpoint(state_dict_or_path)
    else:
        official = _state_dict_of(state_dict_or_path, "the given object")
    mapped = _map_keys(model, official)
    own = {k: v for k, v in model.state_dict().items() if not k.endswith(_KWLAB_ONLY)}
    missing = [k for k in own if k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in mapped and tuple(mapped[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        cfg = getattr(model, "kwlab_config", {})
        built = f"arch={cfg.get('arch')!r}, preset={cfg.get('preset')!r}" if cfg else "this model"
        n_wh = sum(1 for k in official if _WAREHOUSE.match(k.removeprefix("module.")))
        lines = [
            f"checkpoint does not match the model built with {built} "
            f"(checkpoint: {len(official)} tensors, {n_wh} warehouses; model: {len(_owners(model)[0])} "
            f"warehouses). Build the model with the arch and preset the checkpoint was trained with."
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
    model.load_state_dict({**model.state_dict(), **{k: mapped[k] for k in own}})
    if temperature is not None:
        set_temperature(model, temperature)
    return model


def to_official(model: nn.Module) -> dict[str, Tensor]:
    """The inverse mapping: a kwlab KW model's weights as an official-layout state_dict."""
    order, owners = _owners(model)
    owner_key = {f"{owners[k]}.warehouse.cells": i for i, k in enumerate(order)}
    linears = {n for n, m in model.named_modules() if isinstance(m, KWLinear)}
    unmap = _arch_module_attr(model, "official_key_unmap")
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
