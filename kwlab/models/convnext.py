"""ConvNeXt-T (Liu et al., 2022) as a plain static ConvNet, plus its official KernelWarehouse wiring.

Checked against OSVAI/KernelWarehouse ``models/convnext.py`` and ``models/kw_convnext.py``. The network is
built as the official *KW* ConvNeXt lays it out: the pointwise layers ``pwconv1``/``pwconv2`` are 1x1
``nn.Conv2d`` on ``(B, C, H, W)`` (the static official model uses ``nn.Linear`` on channels-last
tensors; same function and parameter count) and the layer scale ``gamma`` has shape ``(1, C, 1, 1)``.
Module names and registration order are the official ones (``downsample_layers``, ``stages``, ``norm``,
``head``), so cells are allocated in the official order.

KW wiring (official ``sharing_range="layer_pwconv"``, a string that the official name fusion iterates
character by character; the grouping it yields is written out here). Every conv is KW with its bias,
the head stays static, and the attention uses LayerNorm (``attention_norm="layer"``). Warehouse keys
(official fused name in brackets), in official creation order:

* ``"stem"``: the 4x4/4 stem conv [``stagestem_c``];
* ``"downsample1"``..``"downsample3"``: the 2x2/2 downsample convs [``stage{i-1}_l_c``];
* per stage i: ``"stage{i}_dwconv"`` (every 7x7 depthwise conv) [``stage{i}_l_dwconv0``] and
  ``"stage{i}_pwconv"`` (every pwconv1 and pwconv2) [``stage{i}_l_p``].

Official checkpoints: see :func:`official_key_map` and :func:`official_tensor_map`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mobilenetv2 import warehouse_order
from .registry import ModelEntry, register_model
from .resnet import DropPath

__all__ = [
    "ConvNeXt",
    "ConvNeXtBlock",
    "LayerNorm2d",
    "convnext_kw_stage_rule",
    "official_key_map",
    "official_tensor_map",
    "CONVNEXT_PRESETS",
]


def official_key_map(official_key: str) -> str:
    """Official ConvNeXt ``state_dict`` key -> kwlab key: the identity.

    kwlab keeps every official module name (``downsample_layers.{i}.{j}``, ``stages.{i}.{j}.{dwconv,norm,
    pwconv1,pwconv2,gamma}``, ``norm``, ``head``); ``warehouse_manager.weights.{i}`` is left as is (it maps to
    the owner of the i-th warehouse in official creation order, resolved by :func:`kwlab.load_official`).
    The official *static* ConvNeXt stores some tensors in another shape; see :func:`official_tensor_map`.
    """
    return official_key


def official_tensor_map(key: str, value: Tensor) -> Tensor:
    """Reshape a tensor of the official *static* ConvNeXt to kwlab's layout (KW checkpoints need nothing).

    ``stages.*.pwconv{1,2}.weight``: ``(O, I)`` (nn.Linear) -> ``(O, I, 1, 1)``; ``stages.*.gamma``:
    ``(C,)`` -> ``(1, C, 1, 1)``. Other tensors are returned unchanged.
    """
    if re.search(r"\.pwconv[12]\.weight$", key) and value.dim() == 2:
        return value[:, :, None, None]
    if key.endswith(".gamma") and value.dim() == 1:
        return value.reshape(1, -1, 1, 1)
    return value


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of ``(B, C, H, W)`` (parameters ``weight``, ``bias`` of shape ``(C,)``)."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """dwconv 7x7 -> LayerNorm -> pwconv1 (1x1, C -> 4C) -> GELU -> pwconv2 (1x1, 4C -> C) -> x gamma -> + x.

    Args:
        dim: channels C.
        drop_path: stochastic depth probability of the residual branch.
        layer_scale_init_value: initial value of ``gamma`` (0 disables the layer scale).
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Conv2d(dim, 4 * dim, kernel_size=1)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv2d(4 * dim, dim, kernel_size=1)
        self.gamma = (
            nn.Parameter(torch.full((1, dim, 1, 1), float(layer_scale_init_value)))
            if layer_scale_init_value > 0
            else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + self.drop_path(y)


class ConvNeXt(nn.Module):
    """ConvNeXt for ``(B, in_chans, H, W)`` images (ImageNet: 224x224) -> logits ``(B, num_classes)``.

    Args:
        num_classes: head outputs.
        depths: blocks per stage (ConvNeXt-T: 3, 3, 9, 3).
        dims: channels per stage (ConvNeXt-T: 96, 192, 384, 768).
        drop_path_rate: stochastic depth, rising linearly from 0 to this over the blocks (official
            recipe: 0.1 static, 0.3 KW 1x).
        layer_scale_init_value: initial layer scale.
        head_init_scale: multiplies the initial head weight and bias.
        dropout: dropout before the head (not in the official model; default 0).
        in_chans: input channels.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        head_init_scale: float = 1.0,
        dropout: float = 0.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"depths and dims must have 4 entries (one per stage), got {depths} and {dims}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(
                nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6)
            )
        )
        for i in range(3):
            down = nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)
            self.downsample_layers.append(nn.Sequential(LayerNorm2d(dims[i], eps=1e-6), down))
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # CPU: works on meta
        self.stages = nn.ModuleList()
        cur = 0
        for i in range(4):
            self.stages.append(
                nn.Sequential(
                    *[
                        ConvNeXtBlock(dims[i], rates[cur + j], layer_scale_init_value)
                        for j in range(depths[i])
                    ]
                )
            )
            cur += depths[i]
        self.num_features = dims[-1]
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(dims[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
            self.head.bias.mul_(head_init_scale)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled, normalised features ``(B, dims[-1])``."""
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.norm(x.mean((-2, -1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.forward_features(x)))

    def kw_stage_rule(self, name: str, module: nn.Module) -> str | None:
        """The official KW warehouse of a layer (None: kept static). See :func:`convnext_kw_stage_rule`."""
        return convnext_kw_stage_rule(name, module)


_DOWN = re.compile(r"^downsample_layers\.(\d+)\.(\d+)$")
_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.(dwconv|pwconv1|pwconv2)$")


def convnext_kw_stage_rule(name: str, module: nn.Module) -> str | None:
    """Official KW grouping of a ConvNeXt layer by name (``stages.2.4.pwconv1`` -> ``"stage2_pwconv"``)."""
    if not isinstance(module, nn.Conv2d):
        return None  # the head stays static
    m = _DOWN.match(name)
    if m is not None:
        i = int(m.group(1))
        return "stem" if i == 0 else f"downsample{i}"
    m = _BLOCK.match(name)
    if m is not None:
        kind = "dwconv" if m.group(3) == "dwconv" else "pwconv"
        return f"stage{m.group(1)}_{kind}"
    return None


#: Official KW config (``configs/convnext/kw1x_convnext_tiny.json``); "2x"/"4x" only change the budget
#: (not in the paper).
CONVNEXT_PRESETS: dict[str, dict[str, Any]] = {
    name: dict(budget=b, cell_in=1.0, cell_out=1.0, reduction=1 / 16, attention_norm="layer", sharing="stage")
    for name, b in (("1x", 1), ("2x", 2), ("4x", 4))
}


def _kw_prepare(model: ConvNeXt, preset: str, settings: dict[str, Any]) -> dict[str, Any]:
    """With the official grouping, record the official warehouse creation order."""
    if settings.get("sharing", "stage") == "stage" and settings.get("warehouse_order") is None:
        settings = dict(settings, warehouse_order=warehouse_order(model, model.kw_stage_rule))
    return settings


register_model(
    ModelEntry(
        "convnext_tiny",
        partial(ConvNeXt, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
        ("drop_path_rate", "layer_scale_init_value", "head_init_scale", "dropout", "in_chans"),
        {"kw": CONVNEXT_PRESETS},
        input_size=(3, 224, 224),
        prepare={"kw": _kw_prepare},
        official_key_map=official_key_map,
        official_tensor_map=official_tensor_map,
        description="ConvNeXt-T (ImageNet 224). KW: every conv incl. stem and downsample, head static; "
        "official recipe 300 epochs AdamW, drop_path 0.1 (static) / 0.3 (KW 1x), EMA, temperature over 20 "
        "epochs.",
    )
)
