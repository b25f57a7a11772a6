"""Look at a model before converting it: one shape-only pass records what each conv/linear layer reads.

:func:`trace_layers` runs the model once on an example input under ``FakeTensorMode`` (no arithmetic, no
memory for activations; works for models on the meta device too) and records, per conv/linear layer, the
shape of its input and its place in execution order. The traced stage rule of
:func:`kwlab.kernelwarehouse` groups layers by what it finds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["LayerTrace", "trace_layers", "default_example_input", "resolution"]

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
