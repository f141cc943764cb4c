"""recstack.layers.vision (ResNet-18, MobileNetV3-Large in plain torch) and the highway layer."""

import warnings

import pytest
import torch
from torch import nn

from recstack.layers import Highway, MobileNetV3Large, ResNet18, build_image_model


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def resnet18_parameters(num_classes: int, batch_norm: bool) -> int:
    """ResNet-18's parameters from its architecture: conv kernels, then per conv either BN (scale + shift)
    or a bias (one per output channel), then the Linear to num_classes."""
    convs = [(3, 64, 7)]  # (in, out, kernel)
    c_in = 64
    for width in (64, 128, 256, 512):
        for unit in range(2):
            convs += [(c_in, width, 3), (width, width, 3)]
            if unit == 0 and c_in != width:
                convs.append((c_in, width, 1))  # projection shortcut
            c_in = width
    kernels = sum(a * b * k * k for a, b, k in convs)
    per_channel = sum(b for _, b, _ in convs) * (2 if batch_norm else 1)
    return kernels + per_channel + 512 * num_classes + num_classes


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("num_classes", [1000, 16])
def test_resnet18_parameter_count_is_the_standard_one(num_classes, batch_norm):
    model = ResNet18(num_classes, batch_norm=batch_norm)
    assert count(model) == resnet18_parameters(num_classes, batch_norm)
    if batch_norm and num_classes == 1000:
        assert count(model) == 11_689_512  # torchvision's resnet18
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == batch_norm
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20 and all((m.bias is None) == batch_norm for m in convs)


def test_mobilenet_v3_large_parameter_count_is_the_standard_one():
    # torchvision's mobilenet_v3_large (1000 classes) has 5,483,032; the last Linear is 1280 -> classes
    for classes in (1000, 16):
        assert count(MobileNetV3Large(classes)) == 5_483_032 - 1281 * 1000 + 1281 * classes


def test_shapes_and_max_pool_padding():
    x = torch.rand(2, 224, 224, 3) * 255  # NHWC, BGR 0-255 as read
    stem = {}
    for batch_norm in (True, False):
        model = ResNet18(16, batch_norm=batch_norm).eval()
        with torch.no_grad():
            stem[batch_norm] = model.pool(torch.relu(model.stem(x.permute(0, 3, 1, 2)))).shape
            assert model(x).shape == (2, 16)
    assert stem[True] == (2, 64, 56, 56)  # SAME-like max-pool: 112 -> 56
    assert stem[False] == (2, 64, 55, 55)  # VALID max-pool, EasyRec PR #126's graph: 112 -> 55
    small = torch.rand(3, 64, 64, 3) * 255
    assert ResNet18(8).eval()(small).shape == (3, 8)
    assert MobileNetV3Large(8).eval()(small).shape == (3, 8)


def test_input_is_nhwc():
    """The model permutes NHWC to NCHW: swapping the image axes of the input changes nothing but H/W."""
    torch.manual_seed(0)
    model = ResNet18(4, in_channels=1, batch_norm=False).eval()
    x = torch.rand(2, 32, 32, 1)
    with torch.no_grad():
        a = model(x)
        b = model.logits(model.stages(model.pool(torch.relu(model.stem(x.permute(0, 3, 1, 2))))).mean(dim=(2, 3)))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["ResNet", "MobileNet"])
def test_traceable(name):
    torch.manual_seed(0)
    model = build_image_model(name, 8).eval()
    x, other = torch.rand(2, 64, 64, 3) * 255, torch.rand(5, 64, 64, 3) * 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(traced(other), model(other), atol=1e-5, rtol=0)


def test_build_image_model_errors():
    with pytest.raises(ValueError, match="unknown image model 'VGG'"):
        build_image_model("VGG", 8)
    with pytest.raises(ValueError, match="ResNet only"):
        build_image_model("MobileNet", 8, batch_norm=False)


def test_highway_formula():
    torch.manual_seed(0)
    layer = Highway(5, 3)
    x = torch.randn(4, 5)
    h = torch.relu(x @ layer.project.weight.T + layer.project.bias)
    t = torch.sigmoid(h @ layer.gate.weight.T + layer.gate.bias)
    big_h = torch.relu(h @ layer.transform.weight.T + layer.transform.bias)
    torch.testing.assert_close(layer(x), big_h * t + h * (1 - t))
    assert layer(x).shape == (4, 3) and layer.output_dim == 3
