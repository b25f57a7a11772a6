"""Shared layer code lives in kwlab.layers.bank: the kernel bank, the conv geometry, repr and init."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kwlab.layers import CondConv2d, DCDConv2d, DynamicConv2d, FDConv2d, KernelDNAConv2d, KWConv2d, ODConv2d
from kwlab.layers.bank import KernelBankConv2d, conv_repr, init_kernels_like_conv, set_conv_geometry
from kwlab.layers.base import conv_geometry


def test_the_whole_kernel_methods_share_one_bank():
    for cls in (CondConv2d, DynamicConv2d, ODConv2d):
        assert issubclass(cls, KernelBankConv2d)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CondConv2d(8, 16, 3, stride=2, padding=1, num_experts=2),
        lambda: DynamicConv2d(8, 16, (3, 1), padding=(1, 0), groups=2, num_kernels=2),
        lambda: ODConv2d(8, 16, 3, dilation=2, padding=2, num_kernels=2),
        lambda: KernelDNAConv2d(8, 16, 3, padding="same"),
        lambda: DCDConv2d(32, 32, 3, padding=1),
        lambda: FDConv2d(32, 32, 3, padding=1, kernel_num=4),
        lambda: KWConv2d(8, 16, 3, stride=2, padding=1),
    ],
)
def test_every_dynamic_conv_holds_the_geometry_of_its_nn_conv2d(make):
    layer = make()
    conv = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.groups,
        bias=getattr(layer, "bias", None) is not None,
    )
    for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
        assert getattr(layer, name) == getattr(conv, name), name
    if not isinstance(layer, KWConv2d):  # KW prints its warehouse instead
        assert layer.extra_repr().startswith(conv_repr(conv))


def test_set_conv_geometry_is_conv_geometry_set_on_the_layer():
    layer = nn.Module()
    set_conv_geometry(layer, 4, 6, 3, 2, "same", 1, 2, dim=2)
    geo = conv_geometry(2, 4, 6, 3, 2, "same", 1, 2)
    assert (layer.kernel_size, layer.stride, layer.padding, layer.dilation) == (
        geo["kernel_size"],
        geo["stride"],
        geo["padding"],
        geo["dilation"],
    )
    assert (layer.in_channels, layer.out_channels, layer.groups) == (4, 6, 2)
    with pytest.raises(ValueError, match="divisible by groups"):
        set_conv_geometry(nn.Module(), 4, 6, 3, groups=4)


def test_each_kernel_starts_like_an_nn_conv2d():
    """Kernel e drawn by init_kernels_like_conv equals nn.Conv2d.reset_parameters at the same RNG state."""
    weight, bias = torch.empty(3, 5, 4, 3, 3), torch.empty(3, 5)
    torch.manual_seed(0)
    init_kernels_like_conv(weight, bias)
    torch.manual_seed(0)
    for e in range(3):
        conv = nn.Conv2d(4, 5, 3)  # reset_parameters draws the weight, then the bias
        assert torch.equal(weight[e], conv.weight.detach()) and torch.equal(bias[e], conv.bias.detach())
