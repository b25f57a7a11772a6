"""Conversion of real architectures (issue 10): parameter breakdown, plan table, guard, stage rules."""

from __future__ import annotations

import torch
from torch import nn

import kwlab
from kwlab.layers import CondConv2d, KernelDNAConv2d, KWConv2d


def _numel(*tensors) -> int:
    return sum(t.numel() for t in tensors if t is not None)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.conv3(self.conv2(x))
        return self.fc(self.bn3(x).mean((2, 3)))


def test_parameter_breakdown_static_model_by_explicit_count():
    m = Small()
    got = kwlab.parameter_breakdown(m)
    static = _numel(m.conv1.weight, m.conv2.weight, m.conv2.bias, m.conv3.weight, m.fc.weight, m.fc.bias)
    other = _numel(m.bn1.weight, m.bn1.bias, m.bn3.weight, m.bn3.bias)
    assert got == dict(total=static + other, static=static, warehouse=0, attention=0, other=other)
    assert got["total"] == kwlab.count_parameters(m)


def test_parameter_breakdown_kw_model_counts_shared_warehouse_once():
    m = kwlab.kernelwarehouse(Small(), sharing=lambda n, mod: "s" if n in ("conv2", "conv3") else None)
    wh = kwlab.warehouses(m)["s"]
    att = [p for layer in (m.conv2, m.conv3) for p in layer.attention.parameters()]
    got = kwlab.parameter_breakdown(m)
    static = _numel(m.conv1.weight, m.conv2.bias, m.fc.weight, m.fc.bias)
    other = _numel(m.bn1.weight, m.bn1.bias, m.bn3.weight, m.bn3.bias)
    assert got["warehouse"] == wh.cells.numel() == 16 * 16 * 9 * 2
    assert got["attention"] == _numel(*att)
    assert got["static"] == static and got["other"] == other
    assert got["total"] == kwlab.count_parameters(m) == static + other + got["warehouse"] + got["attention"]


def test_parameter_breakdown_family_layers():
    parent = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    child = KernelDNAConv2d(8, 8, 3, padding=1, parent=parent, bias=True)
    cond = CondConv2d(8, 8, 3, padding=1, bias=True, num_experts=4)
    model = nn.ModuleDict(dict(parent=parent, child=child, cond=cond))
    got = kwlab.parameter_breakdown(model)
    assert got["static"] == parent.weight.numel() + child.bias.numel()  # the shared kernel counted once
    bank = _numel(child.spatial_scale, child.filter_scale, cond.weight)
    bank += cond.bias.numel() if cond.bias.dim() > 1 else 0
    assert got["warehouse"] == bank
    assert got["attention"] == _numel(*child.attention.parameters(), *cond.attention.parameters())
    assert sum(got[k] for k in ("static", "warehouse", "attention", "other")) == got["total"]
    assert got["total"] == kwlab.count_parameters(model)
    lone = KWConv2d(16, 16, 3)
    assert kwlab.parameter_breakdown(lone)["warehouse"] == lone.warehouse.cells.numel()
