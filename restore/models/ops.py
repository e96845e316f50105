"""The one operation registry shared by both search spaces.

A genotype names operations by their registry key; `build()` looks them up here.
Each role has its own table because the roles have different contracts:

- ``cell``   (HiNAS):  C → C, same resolution; each conv is ReLU → conv → BatchNorm.
- ``normal`` (MoD-NAS): C_in → C_out, same resolution; ReLU before each conv, no BN.
- ``down``   (MoD-NAS): C_in → C_out at half resolution (ceil), ``forward(x)``.
- ``up``     (MoD-NAS): C_in → C_out at a given target size, ``forward(x, size)``; the
  target is the matching encoder level's size, so odd sizes round-trip exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from restore.errors import RestoreError
from restore.models.dcn import DeformConv2d

# --------------------------------------------------------------------------- helpers


def _same_pad(kernel: int, dilation: int = 1) -> int:
    return dilation * (kernel - 1) // 2


class Zero(nn.Module):
    """The HiNAS ``none`` op: no connection (a zero tensor of the input's shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


# --------------------------------------------------------------------------- HiNAS cell ops


def _relu_conv_bn(conv: nn.Module, channels: int, affine: bool) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(inplace=False), conv, nn.BatchNorm2d(channels, affine=affine))


def _hinas_conv(c: int, affine: bool) -> nn.Module:
    return _relu_conv_bn(nn.Conv2d(c, c, 3, padding=1, bias=False), c, affine)


def _hinas_sep(c: int, affine: bool) -> nn.Module:
    conv = nn.Sequential(
        nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
    )
    return _relu_conv_bn(conv, c, affine)


def _hinas_dil(c: int, affine: bool) -> nn.Module:
    return _relu_conv_bn(nn.Conv2d(c, c, 3, padding=2, dilation=2, bias=False), c, affine)


def _hinas_def(c: int, affine: bool) -> nn.Module:
    return _relu_conv_bn(DeformConv2d(c, c, 3, padding=1, bias=False), c, affine)


CellOpFactory = Callable[[int, bool], nn.Module]

CELL_OPS: dict[str, CellOpFactory] = {
    "conv_3x3": _hinas_conv,
    "sep_conv_3x3": _hinas_sep,
    "dil_conv_3x3": _hinas_dil,
    "def_conv_3x3": _hinas_def,
    "skip": lambda c, affine: Identity(),
    "none": lambda c, affine: Zero(),
}

# --------------------------------------------------------------------------- MoD-NAS normal ops


class ReLUConv(nn.Sequential):
    """ReLU → conv (MoD-NAS puts the activation before each conv and uses no BN)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, stride: int = 1, dilation: int = 1):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=_same_pad(kernel, dilation), dilation=dilation),
        )


class SepConv(nn.Sequential):
    """ReLU → depthwise k×k → pointwise 1×1."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, padding=_same_pad(kernel), groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1),
        )


class ResBlock(nn.Module):
    """ReLU → conv → ReLU → conv plus the input (projected by a 1×1 conv when widths differ)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3):
        super().__init__()
        self.body = nn.Sequential(ReLUConv(c_in, c_out, kernel), ReLUConv(c_out, c_out, kernel))
        self.shortcut = Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


NormalOpFactory = Callable[[int, int], nn.Module]

def _normal_skip(c_in: int, c_out: int) -> nn.Module:
    # only used by the "skip in candidates" ablation, where every supernet layer is C → C
    if c_in != c_out:
        raise RestoreError(f"a skip layer cannot change the width ({c_in} → {c_out})")
    return Identity()


NORMAL_OPS: dict[str, NormalOpFactory] = {
    "conv_3x3": lambda ci, co: ReLUConv(ci, co, 3),
    "conv_5x5": lambda ci, co: ReLUConv(ci, co, 5),
    "sep_conv_3x3": lambda ci, co: SepConv(ci, co, 3),
    "sep_conv_5x5": lambda ci, co: SepConv(ci, co, 5),
    "dil_conv_3x3": lambda ci, co: ReLUConv(ci, co, 3, dilation=2),
    "dil_conv_5x5": lambda ci, co: ReLUConv(ci, co, 5, dilation=2),
    "res_block_3x3": lambda ci, co: ResBlock(ci, co, 3),
    "skip": _normal_skip,
}

# --------------------------------------------------------------------------- MoD-NAS down/up ops


def half_size(h: int, w: int) -> tuple[int, int]:
    """Every down op maps H×W to ceil(H/2)×ceil(W/2), so odd sizes work everywhere."""
    return (h + 1) // 2, (w + 1) // 2


class StridedConvDown(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = ReLUConv(c_in, c_out, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class InterpDown(nn.Module):
    """Interpolate to half size, then a 1×1 conv for the channel change."""

    def __init__(self, c_in: int, c_out: int, mode: str):
        super().__init__()
        self.mode = mode
        self.proj = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "area":
            # avg_pool with ceil_mode is area interpolation by 1/2 and exports to plain ONNX
            x = F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False)
        else:
            size = half_size(x.shape[-2], x.shape[-1])
            align = False if self.mode == "bilinear" else None
            x = F.interpolate(x, size=size, mode=self.mode, align_corners=align)
        return self.proj(x)


class DeconvUp(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.act = nn.ReLU(inplace=False)
        self.deconv = nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.deconv(self.act(x))[..., : size[0], : size[1]]


class InterpUp(nn.Module):
    def __init__(self, c_in: int, c_out: int, mode: str):
        super().__init__()
        # area up-sampling by an integer factor is nearest; bilinear keeps its corners convention
        self.mode = "nearest" if mode == "area" else mode
        self.proj = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        align = False if self.mode == "bilinear" else None
        return self.proj(F.interpolate(x, size=size, mode=self.mode, align_corners=align))


class SubPixelUp(nn.Module):
    """ReLU → 3×3 conv to 4·C_out → PixelShuffle(2), cropped to the target size."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = ReLUConv(c_in, 4 * c_out, 3)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.shuffle(self.conv(x))[..., : size[0], : size[1]]


DOWN_OPS: dict[str, NormalOpFactory] = {
    "conv_3x3_s2": StridedConvDown,
    "bilinear": lambda ci, co: InterpDown(ci, co, "bilinear"),
    "nearest": lambda ci, co: InterpDown(ci, co, "nearest"),
    "area": lambda ci, co: InterpDown(ci, co, "area"),
}

UP_OPS: dict[str, NormalOpFactory] = {
    "deconv_3x3": DeconvUp,
    "bilinear": lambda ci, co: InterpUp(ci, co, "bilinear"),
    "nearest": lambda ci, co: InterpUp(ci, co, "nearest"),
    "area": lambda ci, co: InterpUp(ci, co, "area"),
    "subpixel": SubPixelUp,
}

# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Role:
    name: str
    ops: dict
    description: str


ROLES: dict[str, Role] = {
    "cell": Role("cell", CELL_OPS, "HiNAS cell edge (C → C, ReLU-conv-BN)"),
    "normal": Role("normal", NORMAL_OPS, "MoD-NAS normal layer"),
    "down": Role("down", DOWN_OPS, "MoD-NAS down-sampling layer"),
    "up": Role("up", UP_OPS, "MoD-NAS up-sampling layer"),
}

HINAS_OPS: tuple[str, ...] = tuple(CELL_OPS)
# the paper's seven normal-layer candidates; "skip" is only for the depth ablation
MODNAS_NORMAL_OPS: tuple[str, ...] = tuple(k for k in NORMAL_OPS if k != "skip")
MODNAS_DOWN_OPS: tuple[str, ...] = tuple(DOWN_OPS)
MODNAS_UP_OPS: tuple[str, ...] = tuple(UP_OPS)


def check_op(role: str, name: str) -> None:
    """Raise a clear error for an op name the registry does not know."""
    if role not in ROLES:
        raise RestoreError(f"unknown op role {role!r} (known: {', '.join(ROLES)})")
    ops = ROLES[role].ops
    if name not in ops:
        raise RestoreError(f"unknown {role} op {name!r} (known: {', '.join(ops)})")


def make_op(role: str, name: str, *args, **kwargs) -> nn.Module:
    check_op(role, name)
    return ROLES[role].ops[name](*args, **kwargs)
