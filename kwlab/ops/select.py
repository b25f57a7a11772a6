"""Which algorithm runs: forcing one (argument, global setter, context manager) and the automatic choice.

Precedence: an explicit ``algorithm=`` other than ``"auto"`` wins; otherwise the algorithm set by
:func:`use_algorithm` (where it applies to the shape: ``"matmul"`` only fits unpadded 1x1 convolutions, other
shapes then fall back to the automatic choice); otherwise :func:`choose`.

The automatic choice is a rule table measured with ``benchmarks/bench_speed.py`` (see benchmarks/README.md).
With :func:`set_benchmark` ``(True)`` it instead times every candidate once per shape, forward and backward,
and caches the winner (like ``torch.backends.cudnn.benchmark``).

ONNX with a dynamic batch (``torch.onnx.export(..., dynamo=True, dynamic_shapes=...)``): ONNX's ``Conv``
takes ``group`` as a constant, so ``"grouped"`` (which folds the batch into the groups) cannot be written,
nor ``"loop"`` (a Python loop over the batch). While such an export traces, the automatic choice takes
``"unfold"`` (``"matmul"`` for 1x1) instead, and forcing ``"grouped"`` or ``"loop"`` is refused by name
(:data:`NOT_ONNX_DYNAMIC`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

try:  # the flag torch.onnx.export sets while it traces (see _onnx_exporting)
    from torch.onnx._internal.exporter import _flags as _onnx_flags
except ImportError:  # pragma: no cover - a torch without the dynamo exporter
    _onnx_flags = None

from .algorithms import IMPLEMENTED
from .unfold import ConvGeometry

__all__ = [
    "ALGORITHMS",
    "use_algorithm",
    "get_algorithm",
    "set_benchmark",
    "choose",
    "resolve",
    "clear_cache",
    "NOT_ONNX_DYNAMIC",
]

ALGORITHMS = ("auto", *IMPLEMENTED, "contract")

#: The algorithms an ONNX graph with a dynamic batch cannot express (see the module docstring).
NOT_ONNX_DYNAMIC = ("grouped", "loop")

_forced: str = "auto"
_benchmark: bool = False
_cache: dict[tuple, str] = {}


def check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")


class use_algorithm:  # noqa: N801 - used like torch.set_grad_enabled
    """Force an algorithm for every ``dynamic_conv``/``kw_conv`` called with ``algorithm="auto"``.

    Works as a global setter, ``kwlab.ops.use_algorithm("unfold")``, and as a context manager that restores
    the previous setting::

        with kwlab.ops.use_algorithm("loop"):
            model(x).sum().backward()

    Args:
        algorithm: one of :data:`ALGORITHMS`; ``"auto"`` restores the automatic choice.
    """

    def __init__(self, algorithm: str) -> None:
        global _forced
        check_algorithm(algorithm)
        self.previous = _forced
        _forced = algorithm

    def __enter__(self) -> use_algorithm:
        return self

    def __exit__(self, *exc) -> None:
        global _forced
        _forced = self.previous


def get_algorithm() -> str:
    """The globally forced algorithm (``"auto"`` when none)."""
    return _forced


def set_benchmark(enabled: bool) -> None:
    """Time the candidates per shape on first use (True) instead of using the rule table (False)."""
    global _benchmark
    _benchmark = bool(enabled)
    _cache.clear()


def clear_cache() -> None:
    """Forget the benchmarked choices."""
    _cache.clear()


def candidates(geo: ConvGeometry, contract_ok: bool = False) -> tuple[str, ...]:
    """Algorithms that apply (``"matmul"`` needs an unpadded 1x1 kernel, ``"contract"`` a KW layer)."""
    base = ("matmul", "grouped", "loop") if geo.pointwise else ("unfold", "grouped", "loop")
    return (*base, "contract") if contract_ok else base


def _applies(algorithm: str, geo: ConvGeometry, contract_ok: bool) -> bool:
    if algorithm == "matmul":
        return geo.pointwise
    if algorithm == "contract":
        return contract_ok
    return True


def choose(
    geo: ConvGeometry,
    x: torch.Tensor,
    batch: int,
    spatial_out: tuple[int, ...],
    channels: int,
    out_channels: int,
) -> str:
    """The rule table: the algorithm measured fastest for this kind of shape on the benchmark machine
    (benchmarks/README.md). Nothing is timed here, so on another machine it need not be the fastest.

    * 1x1 without padding (and linear layers): ``"matmul"`` (one batched matrix product, no im2col).
    * CUDA, k x k: ``"grouped"`` (cuDNN's grouped kernels).
    * CPU, k x k with a large output (``L >= 256``, e.g. 16x16): ``"grouped"`` (oneDNN's direct grouped
      convolution beats an im2col copy of 9x the activation).
    * CPU, k x k with a small output: ``"unfold"`` (im2col is cheap there and one batched product wins).

    ``kw_conv`` then switches to ``"contract"`` where its cost model says so (small output, see
    :func:`kwlab.ops.dynamic._kw_cost`).
    """
    if geo.pointwise:
        return "matmul"
    if x.device.type == "cuda":
        return "grouped"
    spatial = 1
    for s in spatial_out:
        spatial *= int(s)
    return "grouped" if spatial >= 256 else "unfold"


def resolve(
    algorithm: str,
    geo: ConvGeometry,
    x: torch.Tensor,
    batch: int,
    spatial_out,
    channels: int,
    out_channels: int,
    timer: Callable[[str], float] | None = None,
    contract_ok: bool = False,
    cost: Callable[[str], float] | None = None,
    kernels_fit: bool = False,
) -> str:
    """The algorithm to run for this call (see the module docstring for the precedence).

    ``kernels_fit`` (``kw_conv`` only): the batch's per-sample kernels fit the chunk budget, so they can be
    kept for backward; then the rule table picks ``"grouped"`` for k x k kernels, which with kept kernels was
    the fastest measured path for every such layer (benchmarks/README.md).
    """
    check_algorithm(algorithm)
    if algorithm != "auto":
        if algorithm == "matmul" and not geo.pointwise:
            raise ValueError(
                "algorithm='matmul' needs an unpadded 1x1 kernel (a linear layer); use 'unfold', "
                f"'loop' or 'grouped' for kernel {geo.kernel} with padding {geo.padding}"
            )
        if algorithm == "contract" and not contract_ok:
            raise ValueError(
                "algorithm='contract' needs kw_conv with groups=1 and cells that are 1x1 "
                "spatially or the whole kernel; use 'unfold', 'loop' or 'grouped'"
            )
        _check_onnx(algorithm, batch, "algorithm")
        return algorithm
    if _forced != "auto" and _applies(_forced, geo, contract_ok):
        _check_onnx(_forced, batch, "kwlab.ops.use_algorithm")
        return _forced
    if _benchmark and timer is not None and not _compiling():
        key = (x.device.type, x.dtype, tuple(x.shape), out_channels, geo.key(), torch.is_grad_enabled())
        if key not in _cache:
            times = {a: timer(a) for a in candidates(geo, contract_ok)}
            _cache[key] = min(times, key=times.get)
        return _cache[key]
    choice = choose(geo, x, batch, spatial_out, channels, out_channels)
    if kernels_fit and choice != "matmul":
        choice = "grouped"
    elif contract_ok and cost is not None and cost("contract") < cost(choice):
        choice = "contract"
    if choice in NOT_ONNX_DYNAMIC and _onnx_dynamic_batch(batch):
        return "matmul" if geo.pointwise else "unfold"
    return choice


def _onnx_dynamic_batch(batch) -> bool:
    """Whether an ONNX export is tracing this call with a symbolic batch size.

    Under the exporter's ``strict=True`` fallback (dynamo) ``torch.onnx.is_in_onnx_export()`` is folded to
    False and a symbolic batch reads as an ``int``: there the exporter's own flag is read, and the batch is
    taken as dynamic (the fallback runs only when the non-strict trace failed)."""
    if not (torch.onnx.is_in_onnx_export() or getattr(_onnx_flags, "_is_onnx_exporting", False)):
        return False
    return torch.compiler.is_dynamo_compiling() or not isinstance(batch, int)


def _check_onnx(algorithm: str, batch, where: str) -> None:
    if algorithm in NOT_ONNX_DYNAMIC and _onnx_dynamic_batch(batch):
        raise ValueError(
            f"{where}={algorithm!r} cannot be exported to ONNX with a dynamic batch (ONNX's Conv takes "
            f"'group' as a constant; a graph has no loop over the batch); leave the algorithm 'auto' "
            f"(kwlab then exports 'unfold'), force 'unfold' or 'matmul', or export with a fixed batch"
        )


def _compiling() -> bool:
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover - older torch
        return False


def time_call(fn: Callable[[], None], device: torch.device, repeat: int = 2) -> float:
    """Best wall time of ``fn`` over ``repeat`` runs after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t)
    return best
