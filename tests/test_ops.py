"""Every registered op runs forward and backward on odd sizes, gray and colour widths."""

import pytest
import torch

from restore.errors import RestoreError
from restore.models.ops import CELL_OPS, DOWN_OPS, NORMAL_OPS, UP_OPS, check_op, make_op

H, W = 37, 53


@pytest.mark.parametrize("name", sorted(CELL_OPS))
@pytest.mark.parametrize("channels", [1, 3])
def test_cell_ops(name, channels):
    op = make_op("cell", name, channels, True)
    x = torch.randn(2, channels, H, W, requires_grad=True)
    y = op(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", sorted(n for n in NORMAL_OPS if n != "skip"))
@pytest.mark.parametrize("c_in,c_out", [(1, 8), (3, 3), (8, 16)])
def test_normal_ops(name, c_in, c_out):
    op = make_op("normal", name, c_in, c_out)
    x = torch.randn(2, c_in, H, W, requires_grad=True)
    y = op(x)
    assert y.shape == (2, c_out, H, W)
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(DOWN_OPS))
def test_down_ops_halve_with_ceil(name):
    op = make_op("down", name, 3, 8)
    x = torch.randn(2, 3, H, W, requires_grad=True)
    y = op(x)
    assert y.shape == (2, 8, (H + 1) // 2, (W + 1) // 2)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", sorted(UP_OPS))
def test_up_ops_reach_target_size(name):
    op = make_op("up", name, 8, 3)
    x = torch.randn(2, 8, (H + 1) // 2, (W + 1) // 2, requires_grad=True)
    y = op(x, (H, W))
    assert y.shape == (2, 3, H, W)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_hinas_conv_is_relu_conv_bn():
    op = make_op("cell", "conv_3x3", 4, True)
    kinds = [type(m).__name__ for m in op]
    assert kinds == ["ReLU", "Conv2d", "BatchNorm2d"]


def test_modnas_ops_have_no_batchnorm():
    for name in NORMAL_OPS:
        if name == "skip":
            continue
        op = make_op("normal", name, 4, 4)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in op.modules())


def test_unknown_op_is_a_clear_error():
    with pytest.raises(RestoreError, match="unknown normal op 'conv_9x9'"):
        check_op("normal", "conv_9x9")
    with pytest.raises(RestoreError, match="unknown op role"):
        check_op("nope", "conv_3x3")
    with pytest.raises(RestoreError, match="cannot change the width"):
        make_op("normal", "skip", 4, 8)
