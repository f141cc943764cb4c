"""Image towers in plain torch (torchvision does not install beside recstack's pinned torch).

* :class:`ResNet18`: TF-slim's ``resnet_v1a_18`` as EasyRec's E2E_MM_DBMTL calls it (He, Zhang, Ren,
  Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, https://arxiv.org/abs/1512.03385):
  basic blocks ``[2, 2, 2, 2]`` of widths 64/128/256/512, a 7x7/2 stem and a 3x3/2 max-pool, stride 2
  on the first unit of stages 2-4 with a 1x1 projection shortcut where the shape changes, global
  average pooling and a Linear to ``num_classes``. Each unit is
  ``relu(shortcut(x) + conv3x3(relu(conv3x3(x))))``.
* :class:`MobileNetV3Large`: MobileNetV3-Large, depth multiplier 1.0 (Howard et al., "Searching for
  MobileNetV3", ICCV 2019, https://arxiv.org/abs/1905.02244), logits = ``num_classes``.

Both take images as the readers give them, ``(B, H, W, C)`` float (EasyRec's BGR, 0-255, no
normalisation), and convert to NCHW inside; both return logits ``(B, num_classes)``.
:func:`build_image_model` picks one by EasyRec's ``img_model.model_name`` (``ResNet`` / ``MobileNet``).
"""

from __future__ import annotations

import torch
from torch import nn

#: EasyRec's img_model.model_name values
IMAGE_MODELS = ("ResNet", "MobileNet")


def _he_(module: nn.Module) -> None:
    """He-normal (fan-in, gain sqrt(2)) weights and zero biases: TF-slim's ``resnet_arg_scope``."""
    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _glorot_(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases: TensorFlow's default (the PR graph without an arg scope)."""
    nn.init.xavier_uniform_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, batch_norm: bool) -> nn.Sequential:
    """Conv (padding ``kernel // 2``; a bias only without BN) -> [BatchNorm2d]."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=not batch_norm)]
    if batch_norm:
        # eps 1e-5 and a learned scale as TF-slim's batch_norm; momentum torch's 0.1, not slim's decay 0.997
        # (momentum 0.003): with that, the running statistics of a run of a few hundred steps stay near their
        # initial (0, 1) and eval-mode outputs of 0-255 pixels explode (measured: test AUC 0.5 on the sample data)
        layers.append(nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.1))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """``relu(shortcut(x) + conv_bn(relu(conv_bn(x))))``; the shortcut is a 1x1 projection when the
    stride or the width changes, else the identity.

    Shapes:
        ``(B, c_in, H, W)`` -> ``(B, c_out, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, batch_norm: bool) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, 3, stride, batch_norm)
        self.conv2 = _conv_bn(c_out, c_out, 3, 1, batch_norm)
        self.shortcut = _conv_bn(c_in, c_out, 1, stride, batch_norm) if stride != 1 or c_in != c_out \
            else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.shortcut(x) + self.conv2(torch.relu(self.conv1(x))))


class ResNet18(nn.Module):
    """ResNet-18 (``resnet_v1a_18``) with a BatchNorm switch.

    Args:
        num_classes: logits (EasyRec's ``img_model.num_classes``).
        in_channels: image channels (3).
        batch_norm: ``True`` (recstack's default; TF-slim's intended ``resnet_arg_scope`` graph):
            BatchNorm after every conv, convs without bias, He-normal init, a SAME-like 3x3/2
            max-pool (padding 1: 112 -> 56). ``False``: the graph EasyRec's PR #126 built (no arg
            scope): no BatchNorm, convs with biases, Glorot-uniform init, zero biases, a VALID
            max-pool (112 -> 55).

    Shapes:
        ``(B, H, W, C)`` float (NHWC, as read; BGR 0-255) -> logits ``(B, num_classes)``.
    """

    widths = (64, 128, 256, 512)

    def __init__(self, num_classes: int, in_channels: int = 3, batch_norm: bool = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"ResNet18: num_classes must be >= 1, got {num_classes}")
        self.batch_norm = batch_norm
        self.stem = _conv_bn(in_channels, 64, 7, 2, batch_norm)
        self.pool = nn.MaxPool2d(3, 2, padding=1 if batch_norm else 0)
        stages, c_in = [], 64
        for i, width in enumerate(self.widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(c_in, width, stride, batch_norm),
                                        BasicBlock(width, width, 1, batch_norm)))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.logits = nn.Linear(512, num_classes)
        self.output_dim = num_classes
        init = _he_ if batch_norm else _glorot_
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                init(m)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2)
        x = self.pool(torch.relu(self.stem(x)))
        x = self.stages(x)
        return self.logits(x.mean(dim=(2, 3)))


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: the nearest multiple of ``divisor``, never below 90% of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcite(nn.Module):
    """``x * hard_sigmoid(W2 relu(W1 avgpool(x)))`` with ``make_divisible(channels / 4)`` squeeze units."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeeze = make_divisible(channels / 4)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * nn.functional.hardsigmoid(scale)


def _conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int, groups: int, act: str | None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.1)]
    if act == "RE":
        layers.append(nn.ReLU())
    elif act == "HS":
        layers.append(nn.Hardswish())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV3 bneck: [1x1 expand] -> kxk depthwise -> [squeeze-excite] -> 1x1 project (+ x when shapes match)."""

    def __init__(self, c_in: int, kernel: int, expand: int, c_out: int, se: bool, act: str, stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if expand != c_in:
            layers.append(_conv_bn_act(c_in, expand, 1, 1, 1, act))
        layers.append(_conv_bn_act(expand, expand, kernel, stride, expand, act))
        if se:
            layers.append(SqueezeExcite(expand))
        layers.append(_conv_bn_act(expand, c_out, 1, 1, 1, None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


class MobileNetV3Large(nn.Module):
    """MobileNetV3-Large, depth multiplier 1.0 (always with BatchNorm, eps 1e-3, momentum 0.1: see :func:`_conv_bn`).

    Layout (the paper's Table 1): a 3x3/2 stem of 16 (hard-swish), fifteen bneck blocks, a 1x1
    conv to 960 (hard-swish), global average pooling, Linear 960 -> 1280 with hard-swish and
    dropout 0.2, and a Linear to ``num_classes``. Initialisation: convs He-normal (fan-out), Linears
    N(0, 0.01), zero biases, BatchNorm weight 1 and bias 0.

    Shapes:
        ``(B, H, W, C)`` float (NHWC, as read) -> logits ``(B, num_classes)``.
    """

    #: input channels, kernel, expansion, output channels, squeeze-excite, activation, stride
    config = (
        (16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
        (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
        (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
        (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
        (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1),
    )

    def __init__(self, num_classes: int, in_channels: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"MobileNetV3Large: num_classes must be >= 1, got {num_classes}")
        layers: list[nn.Module] = [_conv_bn_act(in_channels, 16, 3, 2, 1, "HS")]
        layers += [InvertedResidual(*row) for row in self.config]
        layers.append(_conv_bn_act(160, 960, 1, 1, 1, "HS"))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(960, 1280), nn.Hardswish(), nn.Dropout(dropout),
                                  nn.Linear(1280, num_classes))
        self.output_dim = num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(images.permute(0, 3, 1, 2))
        return self.head(x.mean(dim=(2, 3)))


def build_image_model(model_name: str, num_classes: int, in_channels: int = 3, batch_norm: bool = True) -> nn.Module:
    """EasyRec's ``img_model``: ``ResNet`` (:class:`ResNet18`) or ``MobileNet`` (:class:`MobileNetV3Large`).

    Raises:
        ValueError: an unknown name, or ``batch_norm=False`` with MobileNet (which always normalises).
    """
    if model_name == "ResNet":
        return ResNet18(num_classes, in_channels, batch_norm)
    if model_name == "MobileNet":
        if not batch_norm:
            raise ValueError("batch_norm: false applies to ResNet only; MobileNetV3 always uses BatchNorm")
        return MobileNetV3Large(num_classes, in_channels)
    raise ValueError(f"unknown image model '{model_name}' (known: {', '.join(IMAGE_MODELS)})")
