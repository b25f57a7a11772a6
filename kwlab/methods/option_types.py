"""The types of the methods' options, checked by name before any work: :func:`check_option_types` and
:class:`OptionError`.

Every option of the method table (:data:`kwlab.methods.METHODS`, each row's ``options``) whose type is fixed
is listed in :data:`OPTION_TYPES`; ``kwlab.convert``, ``create_model``, ``kwlab.kernelwarehouse`` and
``plan_kernelwarehouse`` refuse a value of another type (a boolean given as the string ``"false"``, a count
given as ``"4"`` or ``2.5``, NaN, a ratio out of its range) with an :class:`OptionError` that names the
option, the value's type and the allowed values, before the model is touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["OptionError", "OPTION_TYPES", "check_option", "check_option_types"]


class OptionError(ValueError):
    """A method option of the wrong type or out of its range (raised before the model is touched)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _bounded_count(limit: int) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return _count(value) and value <= limit

    return check


#: The most kernels (experts, bands) a layer may mix: more is an allocation no method uses (FDConv's 64 is
#: the largest official count), refused before anything is built.
MAX_KERNELS = 1024
#: The largest hidden or latent width an option may ask for.
MAX_WIDTH = 65536


def _positive(value: Any) -> bool:
    return _is_number(value) and value > 0


def _fraction(value: Any) -> bool:
    return _is_number(value) and 0 < value <= 1


def _names(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        return False
    if not isinstance(value, (list, tuple, set, frozenset)):
        return True  # an iterator is read once, by KWOptions; its keys are checked by the plan
    return all(isinstance(v, str) for v in value)


def _pool(value: Any) -> bool:
    return value is None or (_count(value) and value in (1, 2))


#: (method, option) -> (check, allowed): where a method reads an option its own way. KernelDNA's
#: ``reduction`` is the divisor rd of its gate (hidden width channels // rd, official 4).
METHOD_OPTION_TYPES: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("kerneldna", "reduction"): (_count, "an integer >= 1 (hidden width = channels // reduction)"),
    ("dyconv", "temperature"): (_positive, "a finite number > 0 (the softmax divisor T)"),
    ("odconv", "temperature"): (_positive, "a finite number > 0 (the softmax divisor T)"),
}

#: option -> (check, the allowed values in words). Options not listed (patterns, rules, example inputs,
#: per-warehouse mappings) are checked where they are used.
OPTION_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    # booleans: True or False, never a string ("false" is truthy)
    "classifier": (_boolean, "True or False (a bool)"),
    "squeeze_excitation": (_boolean, "True or False (a bool)"),
    "spatial_partition": (_boolean, "True or False (a bool)"),
    "zero_cell": (_boolean, "True or False (a bool)"),
    "near_identity": (_boolean, "True or False (a bool)"),
    # counts
    "num_experts": (_bounded_count(MAX_KERNELS), f"an integer >= 1 and <= {MAX_KERNELS}"),
    "num_kernels": (_bounded_count(MAX_KERNELS), f"an integer >= 1 and <= {MAX_KERNELS}"),
    "kernel_num": (_bounded_count(MAX_KERNELS), f"an integer >= 1 and <= {MAX_KERNELS}"),
    "param_ratio": (_bounded_count(64), "an integer >= 1 and <= 64"),
    "min_hidden": (_bounded_count(MAX_WIDTH), f"an integer >= 1 and <= {MAX_WIDTH}"),
    "latent_dim": (_bounded_count(MAX_WIDTH), f"an integer >= 1 and <= {MAX_WIDTH}"),
    "squeeze": (_bounded_count(MAX_WIDTH), f"an integer >= 1 and <= {MAX_WIDTH}"),
    "pool": (_pool, "1, 2 or None"),
    # numbers
    "budget": (_positive, "a finite number > 0 (1, 2, 4, ... or 1/2, 1/4, ...)"),
    "cell_in": (_positive, "a finite number > 0"),
    "cell_out": (_positive, "a finite number > 0"),
    "reduction": (_fraction, "a number > 0 and <= 1, i.e. in (0, 1] (hidden width = channels x reduction)"),
    "nonlocal_basis_ratio": (_fraction, "a number in (0, 1] (1 = no non-local basis)"),
    "temperature": (_is_number, "a finite number"),
    # names
    "warehouse_order": (_names, "a list of warehouse keys (strings) or None"),
}


def check_option(name: str, value: Any, method: str | None = None) -> None:
    """Refuse ``value`` for option ``name`` when :data:`OPTION_TYPES` says it is of the wrong type.

    Raises:
        OptionError: naming the option, the value and its type, and the allowed values.
    """
    entry = METHOD_OPTION_TYPES.get((method, name)) or OPTION_TYPES.get(name)
    if entry is None:
        return
    check, allowed = entry
    if not check(value):
        where = f" of method {method!r}" if method else ""
        raise OptionError(
            f"option {name}={value!r}{where} has type {type(value).__name__}: {name} must be {allowed}"
        )


def check_option_types(options: Mapping[str, Any], method: str | None = None) -> None:
    """:func:`check_option` for every item of ``options``."""
    for name, value in options.items():
        check_option(name, value, method)
