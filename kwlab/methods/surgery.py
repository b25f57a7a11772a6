"""Model surgery shared by every method and the probe: which layers a pattern selects, how a module is
replaced, and a shape-only look at a model before converting it.

**Selection** (:func:`select`, one semantics everywhere: KW, the family, the probe). A pattern matches a
qualified layer name by ``fnmatch`` glob, exactly, or as a module prefix (``"layer4"`` matches
``layer4.1.conv2``); ``include`` (when given) keeps the candidates it matches, ``exclude`` then drops those
it matches, and a pattern that matches no candidate is an error naming the candidates. Patterns are a str, a
sequence of str, or a predicate ``name -> bool`` (never checked for matches). :func:`set_module` replaces a
submodule by its qualified name.

**Tracing.** One shape-only pass records what each conv/linear layer reads.

:func:`trace_layers` runs the model once on an example input under ``FakeTensorMode`` (no arithmetic, no
memory for activations; works for models on the meta device too) and records, per conv/linear layer, the
shape of its input and its place in execution order. The traced stage rule of
:func:`kwlab.kernelwarehouse` groups layers by what it finds.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

__all__ = [
    "Patterns",
    "matches",
    "check_patterns",
    "select",
    "set_module",
    "LayerTrace",
    "trace_layers",
    "default_example_input",
    "resolution",
]

#: include/exclude patterns: None, a glob/prefix, a sequence of them, or a predicate ``name -> bool``.
Patterns = str | Sequence[str] | Callable[[str], bool] | None
T = TypeVar("T")


def _as_patterns(patterns: Patterns, param: str) -> tuple[str, ...] | Callable[[str], bool] | None:
    if patterns is None or callable(patterns):
        return patterns
    if isinstance(patterns, str):
        return (patterns,)
    if isinstance(patterns, Sequence) and all(isinstance(p, str) for p in patterns):
        return tuple(patterns)
    raise ValueError(
        f"{param} must be None, a glob pattern / module prefix (str), a sequence of them or a predicate "
        f"name -> bool, got {patterns!r}"
    )


def matches(name: str, patterns: Patterns, param: str = "patterns") -> bool:
    """Whether qualified name ``name`` matches ``patterns`` (glob, exact name or module prefix; or the
    predicate). None matches nothing."""
    pats = _as_patterns(patterns, param)
    if pats is None:
        return False
    if callable(pats):
        return bool(pats(name))
    return any(fnmatch.fnmatchcase(name, p) or name == p or name.startswith(p + ".") for p in pats)


def check_patterns(param: str, patterns: Patterns, names: Sequence[str], what: str = "layer") -> None:
    """Raise a ValueError naming ``param`` when one of its patterns matches none of ``names``."""
    pats = _as_patterns(patterns, param)
    if pats is None or callable(pats):
        return
    for p in pats:
        if not any(matches(n, p) for n in names):
            shown = ", ".join(names[:30]) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")
            raise ValueError(
                f"{param} pattern {p!r} matches no {what} of the model (glob, name or module prefix); "
                f"the candidates are: {shown or 'none'}"
            )


def select(
    candidates: Sequence[tuple[str, T]],
    include: Patterns = None,
    exclude: Patterns = None,
    *,
    what: str = "layer",
) -> list[tuple[str, T]]:
    """The ``(name, module)`` candidates that ``include`` keeps (all when None) and ``exclude`` does not drop.

    Raises:
        ValueError: a pattern that matches no candidate (the message lists them), or patterns of a wrong type.
    """
    names = [n for n, _ in candidates]
    check_patterns("include", include, names, what)
    check_patterns("exclude", exclude, names, what)
    return [
        (n, m)
        for n, m in candidates
        if (include is None or matches(n, include, "include")) and not matches(n, exclude, "exclude")
    ]


def set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule ``name`` (a qualified name) of ``root`` by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


_CONV_LIKE = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


@dataclass(frozen=True)
class LayerTrace:
    """What one layer saw in the traced forward pass."""

    name: str
    order: int  # position in execution order (first call)
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


def resolution(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The spatial (conv) or token (linear) dims of an input: ``()`` for a plain ``(B, C)`` vector."""
    if isinstance(module, nn.Linear):
        return tuple(in_shape[1:-1])
    return tuple(in_shape[2:])


def default_example_input(model: nn.Module) -> Tensor:
    """A batch of 2 of the usual input for the model's first conv/linear layer: 224x224 images for a 2D conv
    (112x112x16 clips for 3D, length 224 for 1D), ``(2, features)`` for a linear layer."""
    first = next((m for m in model.modules() if isinstance(m, _CONV_LIKE)), None)
    if first is None:
        raise ValueError("the model has no conv or linear layer to convert")
    ref = next(iter(model.parameters()), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    if isinstance(first, nn.Linear):
        return torch.zeros(2, first.in_features, dtype=dtype)
    spatial = {1: (224,), 2: (224, 224), 3: (16, 112, 112)}[len(first.kernel_size)]
    return torch.zeros(2, first.in_channels, *spatial, dtype=dtype)


def trace_layers(model: nn.Module, example_input: Tensor | tuple | None = None) -> dict[str, LayerTrace]:
    """Run ``model`` once, shape only, and record the input of every conv/linear layer (name -> trace).

    ``example_input``: a tensor (or a tuple of positional inputs); default :func:`default_example_input`.
    The model's train/eval flags and buffers are left as they were; the input is moved to the model's
    device (shapes only). A model that cannot run on the input
    raises a ValueError naming ``example_input``.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: PLC0415 - internal, imported late

    given = example_input is not None
    if example_input is None:
        example_input = default_example_input(model)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    if not all(isinstance(a, Tensor) for a in args):
        raise ValueError(
            f"example_input must be a tensor or a tuple of tensors, got {type(example_input).__name__}"
        )
    names = {id(m): n for n, m in model.named_modules() if isinstance(m, _CONV_LIKE)}
    seen: dict[str, LayerTrace] = {}

    def hook(module, inputs, output):
        name = names.get(id(module))
        if name is None or name in seen or not inputs or not isinstance(inputs[0], Tensor):
            return
        out_shape = tuple(output.shape) if isinstance(output, Tensor) else ()
        seen[name] = LayerTrace(name, len(seen), tuple(inputs[0].shape), out_shape)

    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else None
    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook) for m in model.modules() if id(m) in names]
    try:
        model.eval()
        with FakeTensorMode(allow_non_fake_inputs=True) as mode, torch.no_grad():
            # on the model's device (a CPU example input works for a model built on the meta device)
            fake = tuple(mode.from_tensor(a).to(device) if device else mode.from_tensor(a) for a in args)
            model(*fake)
    except Exception as err:  # noqa: BLE001 - any failure means the input does not fit the model
        shapes = ", ".join(str(tuple(a.shape)) for a in args)
        hint = "" if given else " (the default for its first layer)"
        raise ValueError(
            f"could not run the model on example_input of shape {shapes}{hint}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}. Pass example_input= with a batch of the "
            f"model's real input shape, or a sharing rule that needs no trace "
            '("names", "layer", a callable).'
        ) from None
    finally:
        for h in handles:
            h.remove()
        for m, flag in modes.items():
            m.training = flag
    return seen
