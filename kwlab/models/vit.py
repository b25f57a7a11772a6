"""Vision Transformers of the DeiT family (Touvron et al., 2021), static or with KW value and MLP layers.

The static network matches timm's ``VisionTransformer`` as configured by ``deit_tiny_patch16_224`` /
``deit_small_patch16_224`` (class token, learned position embedding, pre-norm blocks, LayerNorm eps 1e-6,
GELU MLP with ratio 4, the class token's final feature feeds the head) and has the same parameter count
(5,717,416 / 22,050,664 at 1000 classes). One difference in layout: the attention keeps the query, key and
value projections as three ``nn.Linear`` (``attn.q``, ``attn.k``, ``attn.v``) where timm fuses them into
one ``attn.qkv``, so that the value projection alone can become a KW layer. :func:`load_timm_state_dict`
splits a timm ``state_dict`` (``qkv`` rows are ``[q; k; v]``) to load it.

KernelWarehouse on a ViT (the KW paper's third mechanism). The official repository ships no ViT code, so
the wiring below is kwlab's reading of the paper, and the paper's DeiT numbers were **not** verified here:

* KW layers: the value projection ``attn.v`` and the MLP ``mlp.fc1``, ``mlp.fc2`` of every block. Query
  and key stay static, so the token-to-token attention map is computed exactly as in the static net.
* The output projection ``attn.proj`` is static by default (``kw_proj=False``): the paper names value and
  MLP only, so the KW model differs from the static one exactly where the paper says. ``kw_proj=True``
  makes it KW too (it then shares the value warehouse of its block range).
* Each :class:`~kwlab.layers.KWLinear` sees its ``(B, N, C)`` input as a 1x1 conv over tokens, so its
  attention pools the **mean over all N tokens** (class token included) of a sample, then runs the
  unchanged KW attention (CAF with the zero cell and the temperature blend).
* Sharing rule (:meth:`VisionTransformer.kw_stage_rule`): tokens keep one resolution, so the blocks are
  cut into ``kw_groups`` contiguous ranges of (near) equal length; per range there is one warehouse for
  the attention layers (``"blocks0-2:attn"``: v, plus proj when KW) and one for the MLP
  (``"blocks0-2:mlp"``: fc1 and fc2, which share as ConvNeXt's two pointwise convs do officially).
  Default ``min(4, depth)`` ranges (3 blocks a range at depth 12; ``vit_cifar``: 2), kwlab's choice, not the
  paper's. ``sharing="layer"`` / ``"network"`` keep the same KW layers and change only the grouping.
* Presets :data:`VIT_PRESETS`: the ResNet budgets and cell ratios ("1/4x", "1/2x": cells of half the
  width; "1x", "2x", "4x") with a LayerNorm in the attention (``attention_norm="layer"``, as in the
  official KW ConvNeXt, the official KW net built on LayerNorm).

timm models (fused ``qkv``): ``kwlab.kernelwarehouse(timm_vit, sharing=timm_kw_rule(timm_vit))`` converts
the MLPs only (a fused ``qkv`` cannot be cut into a KW value and static q/k by conversion). For a KW value
projection from timm weights: build the kwlab DeiT, :func:`load_timm_state_dict`, then
``kwlab.kernelwarehouse(model, init="static")``. Without ``sharing=`` the generic rule would convert every
linear layer of a timm model, qkv and head included.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
import torch.fx
from torch import Tensor, nn

from .registry import ModelEntry, register_model
from .resnet import DropPath

__all__ = [
    "VisionTransformer",
    "Attention",
    "Mlp",
    "Block",
    "PatchEmbed",
    "VIT_PRESETS",
    "vit_kw_rule",
    "timm_kw_rule",
    "timm_key_map",
    "load_timm_state_dict",
]

_LN_EPS = 1e-6  # timm's LayerNorm default


def _positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


@torch.fx.wrap
def _check_image(x: Tensor, in_chans: int, img_size: tuple[int, int]) -> Tensor:
    if x.dim() != 4 or x.shape[1] != in_chans or tuple(x.shape[2:]) != img_size:
        raise ValueError(
            f"VisionTransformer expects images of shape (B, {in_chans}, {img_size[0]}, {img_size[1]}) "
            f"(img_size={img_size[0]}, in_chans={in_chans}), got {tuple(x.shape)}"
        )
    return x


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches -> tokens ``(B, N, embed_dim)`` (a strided conv, as timm)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        _positive_int(img_size, "img_size")
        _positive_int(patch_size, "patch_size")
        if img_size % patch_size:
            raise ValueError(
                f"patch_size ({patch_size}) must divide img_size ({img_size}); "
                f"allowed: the divisors of {img_size}"
            )
        self.img_size = (img_size, img_size)
        self.in_chans = in_chans
        self.grid = img_size // patch_size
        self.num_patches = self.grid * self.grid
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)

    def forward(self, x: Tensor) -> Tensor:
        x = _check_image(x, self.in_chans, self.img_size)
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with separate ``q``, ``k``, ``v`` projections and the output ``proj``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_drop: float = 0.0) -> None:
        super().__init__()
        _positive_int(num_heads, "num_heads")
        if dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide embed_dim ({dim})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, t: Tensor) -> Tensor:  # (B, N, C) -> (B, h, N, d)
        return t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        # written out (timm's non-fused path) rather than F.scaled_dot_product_attention, whose CPU kernel
        # torch's flop counter does not count: kwlab.count_macs then includes QK^T and AV
        q = self._heads(self.q(x)) * self.scale
        attn = (q @ self._heads(self.k(x)).transpose(-2, -1)).softmax(dim=-1)
        out = attn @ self._heads(self.v(x))
        return self.proj_drop(self.proj(out.transpose(1, 2).flatten(2)))


class Mlp(nn.Module):
    """``fc1`` (C -> hidden) -> GELU -> ``fc2`` (hidden -> C)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.attn = Attention(dim, num_heads, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """DeiT / ViT classifier for ``(B, in_chans, img_size, img_size)`` images -> logits ``(B, num_classes)``.

    Args:
        num_classes: classifier outputs.
        img_size: input height = width (the position embedding is learned for exactly this size).
        patch_size: patch side; must divide ``img_size``.
        in_chans: input channels.
        embed_dim: token width C; ``num_heads`` must divide it.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / C.
        drop_rate: dropout after the embedding, in the MLP and after ``attn.proj``.
        drop_path_rate: stochastic depth, rising linearly from 0 to this over the blocks (as timm).
        kw_proj: KW conversion also makes ``attn.proj`` a KW layer (default False, see the module docstring).
        kw_groups: block ranges that have their own warehouses (1: all blocks share; ``depth``: one a block;
            None: ``min(4, depth)``).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        kw_proj: bool = False,
        kw_groups: int | None = None,
    ) -> None:
        super().__init__()
        for value, name in ((in_chans, "in_chans"), (embed_dim, "embed_dim"), (depth, "depth")):
            _positive_int(value, name)
        kw_groups = min(4, depth) if kw_groups is None else _positive_int(kw_groups, "kw_groups")
        if kw_groups > depth:
            raise ValueError(f"kw_groups must be between 1 and depth ({depth}), got {kw_groups}")
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio!r}")
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.num_features = self.embed_dim = embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # CPU: works on meta
        self.blocks = nn.Sequential(
            *[Block(embed_dim, num_heads, mlp_ratio, drop_rate, rates[i]) for i in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=_LN_EPS)
        self.head = nn.Linear(embed_dim, num_classes)
        self.kw_proj = bool(kw_proj)
        self.kw_groups = kw_groups
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """timm's default ViT init: Linear trunc-normal(0.02) with zero bias, pos_embed trunc-normal(0.02),
        cls_token normal(1e-6); the patch conv and LayerNorms keep PyTorch's defaults."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward_features(self, x: Tensor) -> Tensor:
        """Tokens after the final norm, ``(B, 1 + N, C)`` (class token first)."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(self.pos_drop(x + self.pos_embed))
        return self.norm(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x)[:, 0])

    def block_ranges(self) -> list[tuple[int, int]]:
        """``(first, last)`` block of each of the ``kw_groups`` warehouse ranges."""
        return _ranges(self.depth, self.kw_groups)

    def kw_stage_rule(self, name: str, module: nn.Module) -> str | None:
        """The KW warehouse of a layer (None: kept static). See :func:`vit_kw_rule`."""
        return vit_kw_rule(name, module, depth=self.depth, groups=self.kw_groups, kw_proj=self.kw_proj)


def _ranges(depth: int, groups: int) -> list[tuple[int, int]]:
    bounds = [g * depth // groups for g in range(groups + 1)]
    return [(bounds[g], bounds[g + 1] - 1) for g in range(groups)]


def _range_name(block: int, depth: int, groups: int) -> str:
    first, last = next(r for r in _ranges(depth, groups) if r[0] <= block <= r[1])
    return f"blocks{first}-{last}"


_KW_NAME = re.compile(r"^blocks\.(\d+)\.(?:attn\.(v|proj)|mlp\.(fc1|fc2))$")


def vit_kw_rule(
    name: str, module: nn.Module, *, depth: int, groups: int = 4, kw_proj: bool = False
) -> str | None:
    """Warehouse key of a kwlab ViT layer, or None to keep it static.

    ``blocks.{i}.attn.v`` (and ``attn.proj`` when ``kw_proj``) -> ``"blocks{a}-{b}:attn"``;
    ``blocks.{i}.mlp.fc1`` / ``fc2`` -> ``"blocks{a}-{b}:mlp"``, where ``a..b`` is the block range of block i
    (``groups`` contiguous ranges; range g holds blocks ``g * depth // groups`` up to
    ``(g + 1) * depth // groups - 1``; depth 12, 4 groups: 0-2, 3-5, 6-8, 9-11). Everything else (patch
    embedding, q, k, the head) is static.
    """
    m = _KW_NAME.match(name)
    if m is None or not isinstance(module, nn.Linear):
        return None
    if m.group(2) == "proj" and not kw_proj:
        return None
    block = int(m.group(1))
    return f"{_range_name(block, depth, groups)}:{'attn' if m.group(2) else 'mlp'}"


_TIMM_MLP = re.compile(r"^blocks\.(\d+)\.mlp\.fc[12]$")


def timm_kw_rule(model: nn.Module, groups: int = 4) -> Callable[[str, nn.Module], str | None]:
    """A sharing rule for a timm ViT/DeiT (fused ``qkv``): the MLPs become KW, grouped as :func:`vit_kw_rule`;
    qkv, proj, patch embedding and head stay static. Use as ``kernelwarehouse(model, sharing=...)``."""
    depth = len(model.blocks)
    _positive_int(groups, "groups")
    if groups > depth:
        raise ValueError(f"groups must be between 1 and the model's depth ({depth}), got {groups}")

    def rule(name: str, module: nn.Module) -> str | None:
        m = _TIMM_MLP.match(name)
        if m is None or not isinstance(module, nn.Linear):
            return None
        return f"{_range_name(int(m.group(1)), depth, groups)}:mlp"

    return rule


_QKV = re.compile(r"^(blocks\.\d+\.attn\.)qkv\.(weight|bias)$")


def timm_key_map(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A timm ViT/DeiT ``state_dict`` with kwlab keys: each fused ``attn.qkv`` split into ``attn.q/k/v``.

    timm computes ``qkv(x).reshape(B, N, 3, heads, d)``, so the first C rows are q, the next C k, the
    last C v. Every other key is the same in both.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        m = _QKV.match(key)
        if m is None:
            out[key] = value
            continue
        if value.shape[0] % 3:
            raise ValueError(f"{key} has {value.shape[0]} rows, not a multiple of 3 (q, k, v)")
        for part, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
            out[f"{m.group(1)}{part}.{m.group(2)}"] = chunk.clone()
    return out


def load_timm_state_dict(model: VisionTransformer, state_dict: Mapping[str, Tensor]) -> VisionTransformer:
    """Load a timm ViT/DeiT ``state_dict`` into a *static* kwlab :class:`VisionTransformer` of the same shape.

    E.g. ``timm.create_model("deit_tiny_patch16_224").state_dict()``. Convert afterwards for KW:
    ``kwlab.kernelwarehouse(model, init="static")`` keeps the loaded function at tau = 1. Returns ``model``.
    """
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"model must be a kwlab VisionTransformer, got {type(model).__name__}")
    if any(not isinstance(b.attn.v, nn.Linear) or not isinstance(b.mlp.fc1, nn.Linear) for b in model.blocks):
        raise ValueError("load timm weights into the static model first, then convert it to KW")
    mapped = timm_key_map(state_dict)
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"state_dict does not fit this model: missing {missing[:6]}, unexpected {unexpected[:6]} "
            "(distilled DeiTs and other timm variants are not supported)"
        )
    bad = [k for k in own if own[k].shape != mapped[k].shape]
    if bad:
        k = bad[0]
        raise ValueError(
            f"shape mismatch for {k}: model {tuple(own[k].shape)}, state_dict {tuple(mapped[k].shape)} "
            "(build the model with the timm model's img_size, patch_size, embed_dim, depth, num_heads)"
        )
    model.load_state_dict(mapped)
    return model


#: KW presets of the ViTs: the ResNet budgets and cell ratios, LayerNorm in the attention (kwlab's choice).
VIT_PRESETS: dict[str, dict[str, Any]] = {
    "1/4x": dict(budget=0.25, cell_in=0.5, cell_out=0.5, attention_norm="layer"),
    "1/2x": dict(budget=0.5, cell_in=0.5, cell_out=0.5, attention_norm="layer"),
    "1x": dict(budget=1, cell_in=1.0, cell_out=1.0, attention_norm="layer"),
    "2x": dict(budget=2, cell_in=1.0, cell_out=1.0, attention_norm="layer"),
    "4x": dict(budget=4, cell_in=1.0, cell_out=1.0, attention_norm="layer"),
}

_VIT_KW = (
    "img_size",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "drop_rate",
    "drop_path_rate",
    "kw_proj",
    "kw_groups",
)
_NOTE = "KW: v and MLP (q, k static); anneal span 20 epochs is kwlab's choice (no official ViT recipe)."

register_model(
    ModelEntry(
        "deit_tiny_patch16_224",
        partial(VisionTransformer, embed_dim=192, depth=12, num_heads=3),
        _VIT_KW,
        {"kw": VIT_PRESETS},
        (3, 224, 224),
        description="DeiT-Tiny (192 wide, 12 blocks, 3 heads, patch 16, 224). " + _NOTE,
    )
)
register_model(
    ModelEntry(
        "deit_small_patch16_224",
        partial(VisionTransformer, embed_dim=384, depth=12, num_heads=6),
        _VIT_KW,
        {"kw": VIT_PRESETS},
        (3, 224, 224),
        description="DeiT-Small (384 wide, 12 blocks, 6 heads, patch 16, 224). " + _NOTE,
    )
)
register_model(
    ModelEntry(
        "vit_cifar",
        partial(
            VisionTransformer, img_size=32, patch_size=4, embed_dim=96, depth=6, num_heads=3, kw_groups=2
        ),
        _VIT_KW,
        {"kw": VIT_PRESETS},
        (3, 32, 32),
        description="DeiT-style ViT for CIFAR (patch 4 at 32x32: 64 tokens, 96 wide, 6 blocks, 3 heads). "
        + _NOTE,
    )
)
