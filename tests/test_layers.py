import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cnnvision.layers import (bilinear_kernel, conv_output_size, conv_relu, deconv, deconv_output_size,
                              linear_relu, pool, same_padding)


@settings(max_examples=40, deadline=None)
@given(w=st.integers(4, 40), f=st.integers(1, 5), s=st.integers(1, 3), p=st.integers(0, 2))
def test_size_formula_matches_conv_and_pool(w, f, s, p):
    if w + 2 * p < f:
        return
    expected = conv_output_size(w, f, s, p)
    assert expected == (w - f + 2 * p) // s + 1
    conv = nn.Conv2d(1, 1, f, s, p)
    assert conv(torch.zeros(1, 1, w, w)).shape[-1] == expected
    if p <= f // 2:
        assert nn.MaxPool2d(f, s, p)(torch.zeros(1, 1, w, w)).shape[-1] == expected


@settings(max_examples=20, deadline=None)
@given(w=st.integers(1, 12), factor=st.integers(1, 4))
def test_deconv_size_is_factor_times_input(w, factor):
    layer = deconv(2, 2, factor)
    assert layer(torch.zeros(1, 2, w, w)).shape[-1] == w * factor
    assert deconv_output_size(w, layer.kernel_size[0], factor, layer.padding[0]) == w * factor


def test_conv_output_size_rejects_too_small_input():
    import pytest
    with pytest.raises(ValueError):
        conv_output_size(2, 5)


def test_same_padding_keeps_size_for_even_and_odd_kernels():
    for k in (1, 2, 3, 4, 5):
        left, right, top, bottom = same_padding(k)
        assert left + right == k - 1 and right >= left
        y = conv_relu(3, 4, k)(torch.randn(2, 3, 11, 13))
        assert y.shape == (2, 4, 11, 13)
        assert (y >= 0).all()  # ReLU


def test_pool_2_2_halves_and_3_2_overlaps():
    x = torch.randn(1, 1, 24, 24)
    assert pool(2)(x).shape[-1] == 12
    assert pool(3, 2)(x).shape[-1] == conv_output_size(24, 3, 2) == 11
    assert pool(2, kind="avg")(x).shape[-1] == 12
    assert pool(2, ceil_mode=True)(torch.randn(1, 1, 25, 25)).shape[-1] == 13  # TF 'SAME'
    torch.testing.assert_close(pool(2, kind="avg")(torch.ones(1, 1, 4, 4)), torch.ones(1, 1, 2, 2))


def test_linear_relu():
    m = linear_relu(5, 3, dropout=0.5)
    assert m(torch.randn(4, 5)).shape == (4, 3)


def test_bilinear_deconv_equals_bilinear_upsampling_away_from_borders():
    x = torch.randn(2, 3, 9, 11)
    for factor in (2, 3, 4):
        up = deconv(3, 3, factor, bilinear=True)(x)
        ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
        assert up.shape == ref.shape
        inner = (..., slice(factor, -factor), slice(factor, -factor))
        torch.testing.assert_close(up[inner], ref[inner], atol=1e-5, rtol=1e-5)
    # and the borders do differ: the deconvolution pads with zeros, interpolate replicates
    up = deconv(3, 3, 2, bilinear=True)(x)
    assert not torch.allclose(up, F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


def test_bilinear_kernel_is_separable_tent():
    k = bilinear_kernel(2)
    assert k.shape == (4, 4)
    torch.testing.assert_close(k[1:3, 1:3], torch.full((2, 2), 0.5625))
    assert k.sum().item() == 4.0  # factor**2: preserves mean intensity


def test_relu_and_max_pool_commute():
    """BasicCNN pools before its ReLU for speed; the function is the same."""
    x = torch.randn(2, 3, 12, 12)
    torch.testing.assert_close(pool(2)(torch.relu(x)), torch.relu(pool(2)(x)))


def test_fast_inference_max_pool_equals_the_library_kernel():
    layer = pool(2, ceil_mode=True)
    for shape in [(2, 3, 8, 10), (1, 4, 7, 9)]:  # even sides take the fast path, odd the library's
        x = torch.randn(shape).to(memory_format=torch.channels_last)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), F.max_pool2d(x, 2, ceil_mode=True), rtol=0, atol=0)
        xg = x.clone().requires_grad_()
        layer(xg).sum().backward()
        assert xg.grad.sum().item() == pytest.approx(layer(x).numel())


def test_sampling_grid_equals_affine_grid():
    from cnnvision.data.augment import sampling_grid
    theta = torch.randn(4, 2, 3)
    torch.testing.assert_close(sampling_grid(theta, 7, 9), F.affine_grid(theta, [4, 1, 7, 9], align_corners=False),
                               atol=1e-5, rtol=1e-5)


def test_folding_batch_norm_keeps_the_outputs_and_removes_the_norms():
    from torch import nn
    from cnnvision.layers import conv_relu, fold_batch_norm
    torch.manual_seed(0)
    net = nn.Sequential(conv_relu(3, 8, 3, batch_norm=True), pool(2), conv_relu(8, 4, 1, batch_norm=True))
    net.train()
    for _ in range(3):  # running statistics away from their initial values
        net(torch.randn(4, 3, 10, 10) * 3 + 1)
    net.eval()
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        want = net(x)
        got = fold_batch_norm(net)(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
