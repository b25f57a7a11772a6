"""Execution layer for per-sample-kernel convolutions (see :mod:`kwlab.ops.dynamic`)."""

from .dynamic import dynamic_conv, kw_conv, set_chunk_bytes
from .layout import CellLayout, assemble_kernel, cell_index_map, mix_cells, split_kernel, split_kernels
from .reference import conv_nd, per_sample_conv
from .select import ALGORITHMS, get_algorithm, set_benchmark, use_algorithm

__all__ = [
    "ALGORITHMS",
    "CellLayout",
    "assemble_kernel",
    "cell_index_map",
    "conv_nd",
    "dynamic_conv",
    "get_algorithm",
    "kw_conv",
    "mix_cells",
    "per_sample_conv",
    "set_benchmark",
    "set_chunk_bytes",
    "split_kernel",
    "split_kernels",
    "use_algorithm",
]
