"""The CIFAR ResNet family of He et al. 2016, Sec. 4.2, as one builder over the grid.

Depth 6n + 2: a 3x3 stem, three stages of n basic blocks (16/32/64 channels, stride 2 between
stages), global average pooling and a linear head. A variant is a pair of switches, (skip,
batchnorm), so plain and residual nets differ only in h(x) = f(x) + x; `residual_fixup` is the
residual net without BN under an initialisation that respects depth (Fixup); `residual_preact` is
He et al. 2016b's pre-activation ResNet (PreActBlock). No Lightning here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.record import VARIANTS, check  # the grid's names, and the one check of a cell

DEPTH_AWARE = {"residual_fixup"}  # the variants whose initialisation depends on depth
PREACTIVATION = {"residual_preact"}  # the variants built of PreActBlock
WIDTHS = (16, 32, 64)  # channels of the three stages, on 32/16/8 px maps for CIFAR
NormLayer = Callable[[int], nn.Module]  # channels -> norm module, e.g. nn.BatchNorm2d; None: no normalisation


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by `stride` and append zero channels; no parameters."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra // 2  # zeros split before and after the channels, as akamaster's option A
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


def projection(c_in: int, c_out: int, stride: int, norm_layer: NormLayer | None) -> nn.Module:
    """Option B: a strided 1x1 conv, followed by the norm layer when the variant has one."""
    if norm_layer is None:
        return nn.Conv2d(c_in, c_out, 1, stride, bias=True)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm_layer(c_out))


def conv_norm(c_in: int, c_out: int, kernel: int, stride: int, norm_layer: NormLayer | None) -> nn.Conv2d:
    """A conv with a bias only where no norm layer follows (a norm layer's shift replaces it)."""
    return nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=norm_layer is None)


def norm(channels: int, norm_layer: NormLayer | None) -> nn.Module:
    return norm_layer(channels) if norm_layer is not None else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convs, each followed by BN (if any); out = relu(f(x) + shortcut(x)) when skip, else relu(f(x)).

    `f` is the residual branch: conv1, bn1, relu, conv2, bn2. Its output, after BN and before the
    addition, is the "response" of He et al. Fig. 7.
    """

    FOLDABLE = (("conv1", "bn1"), ("conv2", "bn2"))  # (a conv, the norm layer right after it)

    def __init__(self, c_in: int, c_out: int, stride: int, skip: bool, norm_layer: NormLayer | None, shortcut: str):
        super().__init__()
        self.conv1 = conv_norm(c_in, c_out, 3, stride, norm_layer)
        self.bn1 = norm(c_out, norm_layer)
        self.conv2 = conv_norm(c_out, c_out, 3, 1, norm_layer)
        self.bn2 = norm(c_out, norm_layer)
        self.skip = skip
        self.shortcut: nn.Module = nn.Identity()
        if skip and (stride != 1 or c_in != c_out):
            self.shortcut = (
                ZeroPadShortcut(c_in, c_out, stride)
                if shortcut == "zero_pad"
                else projection(c_in, c_out, stride, norm_layer)
            )

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """f(x), the branch that a residual block learns."""
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    @property
    def branch_end(self) -> nn.Module:
        """The branch's last module: its output is f(x), before the addition."""
        return self.bn2

    @property
    def responses(self) -> tuple[nn.Module, nn.Module]:
        """Where each 3x3 conv's response is read (He et al. Fig. 7): after its norm layer, before the ReLU."""
        return self.bn1, self.bn2

    def without_branch(self, x: torch.Tensor) -> torch.Tensor:
        """The block with f deleted (Veit et al.'s lesion): relu(shortcut(x))."""
        return F.relu(self.shortcut(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        if self.skip:
            out = out + self.shortcut(x)
        return F.relu(out)


class PreActBlock(nn.Module):
    """He et al. 2016b's full pre-activation unit: out = f(x) + shortcut(x), f = conv2(relu(bn2(conv1(relu(bn1(x)))))),
    and no ReLU after the addition, so that the skips compose to the identity from block to block.

    The first block of each stage pre-activates its input for both paths, as the paper's code does (fb.resnet.torch's
    preresnet.lua, `both_preact`): there the shortcut (identity, option A or a 1x1 conv without BN) reads
    relu(bn1(x)); elsewhere it is the identity on x itself.
    """

    FOLDABLE = (("conv1", "bn2"),)  # bn1 follows an addition, not a conv

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str, shared: bool):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.skip, self.shared = True, shared
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = (
                ZeroPadShortcut(c_in, c_out, stride)
                if shortcut == "zero_pad"
                else nn.Conv2d(c_in, c_out, 1, stride, bias=False)
            )

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """f(x), the branch that a residual block learns."""
        return self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))

    @property
    def branch_end(self) -> nn.Module:
        return self.conv2

    @property
    def responses(self) -> tuple[nn.Module, nn.Module]:
        """conv1's response after its BN (bn2), conv2's as it is added (no BN follows it)."""
        return self.bn2, self.conv2

    def without_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(F.relu(self.bn1(x)) if self.shared else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        return self.conv2(F.relu(self.bn2(self.conv1(a)))) + self.shortcut(a if self.shared else x)


class CifarResNet(nn.Module):
    """stem -> blocks (3 stages x n, flat and in order) -> global average pool -> head."""

    def __init__(
        self,
        variant: str,
        depth: int,
        shortcut: str,
        num_classes: int,
        in_channels: int,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        n = check(variant, depth, shortcut)
        skip, bn = VARIANTS[variant]
        norm_layer = nn.BatchNorm2d if bn else None  # the one place BN is switched on or off, torchvision-style
        self.variant, self.depth, self.shortcut = variant, depth, shortcut
        c, preact = WIDTHS[0], variant in PREACTIVATION
        stem = [conv_norm(in_channels, c, 3, 1, norm_layer), norm(c, norm_layer), nn.ReLU()]
        self.stem = nn.Sequential(*(stem[:1] if preact else stem))  # a pre-activation net: the conv alone
        blocks = []
        for stage, width in enumerate(WIDTHS):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                if preact:
                    blocks.append(PreActBlock(c, width, stride, shortcut, shared=i == 0))
                else:
                    blocks.append(BasicBlock(c, width, stride, skip, norm_layer, shortcut))
                c = width
        self.blocks = nn.Sequential(*blocks)  # 3n blocks; hooks and lesions address them by index
        # a pre-activation net's last addition is not normalised or rectified by a block: BN and ReLU before pooling
        self.final = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()) if preact else nn.Identity()
        self.head = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He et al. 2015 init: std = sqrt(2 / fan_in)
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if variant in DEPTH_AWARE:
            fixup_init(self.blocks)
        elif zero_init_residual:
            zero_last_layers(self.blocks)

    @property
    def stem_response(self) -> nn.Module:
        """Where the stem conv's response is read: its norm layer, or the conv itself where none follows it."""
        return self.stem[1] if len(self.stem) > 1 else self.stem[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.classify(self.blocks(self.stem(x)))

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """The net after its blocks, on the last block's output: global average pool and head (a pre-activation
        net's final BN and ReLU first)."""
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.final(h), 1), 1))


@torch.no_grad()
def zero_last_layers(blocks: nn.Sequential) -> None:
    """Zero the last layer of each residual branch: its BN's scale (torchvision's `zero_init_residual`),
    or without BN its conv. f(x) = 0, so each residual block starts as the identity, h(x) = x (up to the
    final ReLU): the argument for residual learning, as an initialisation. Plain blocks are left alone."""
    for b in blocks:
        if b.skip:  # the branch's last layer with a weight: BasicBlock's bn2 (conv2 without BN), PreActBlock's conv2
            nn.init.zeros_(
                b.bn2.weight if isinstance(b, BasicBlock) and isinstance(b.bn2, nn.BatchNorm2d) else b.conv2.weight
            )


@torch.no_grad()
def fixup_init(blocks: nn.Sequential) -> None:
    """Fixup (Zhang et al. 2019, Sec. 3) for basic blocks (m = 2 layers per branch) without BN: the
    branch's first conv He-initialised and scaled by L^(-1/(2m-2)) = L^(-1/2), L the number of
    residual branches, and its last conv zeroed, so that the stream's variance no longer doubles per
    block. Fixup also adds scalar biases, which the no-BN convs' own biases play here, and a scalar
    multiplier per branch (`FixupScale`); it zeroes the classifier as well, which is kept at its
    default here so that gradients at initialisation can be measured."""
    scale = len(blocks) ** -0.5
    for b in blocks:
        b.conv1.weight.mul_(scale)
        nn.init.zeros_(b.conv2.weight)
        b.bn2 = FixupScale()  # the branch's output, the "response", after the multiplier


class FixupScale(nn.Module):
    """Fixup's scalar multiplier at the end of a residual branch, initialised at 1."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def build_model(
    variant: str,
    depth: int,
    shortcut: str = "projection",
    num_classes: int = 10,
    in_channels: int = 3,
    zero_init_residual: bool = False,
) -> nn.Module:
    """The CIFAR ResNet (or its plain twin) of `depth` = 6n + 2 layers; raises ValueError on bad values.

    `zero_init_residual`: start every residual branch at zero (`zero_last_layers`); He et al. do not."""
    return CifarResNet(variant, depth, shortcut, num_classes, in_channels, zero_init_residual)
