"""The tutorial's building blocks: convolution, pooling, fully connected and deconvolution.

Each helper returns a small ``nn.Sequential`` (or layer) so nets read like the tutorial's
diagrams. ``conv_output_size`` is the (W - F + 2P)/S + 1 rule the layers obey.
"""
import math

import torch
from torch import nn


def conv_output_size(width: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Spatial size after a convolution or pooling window: floor((W - F + 2P) / S) + 1."""
    span = dilation * (kernel - 1) + 1  # the receptive field of one output
    if width + 2 * padding < span:
        raise ValueError(f"input of size {width} (padding {padding}) is smaller than the kernel span {span}")
    return (width + 2 * padding - span) // stride + 1


def deconv_output_size(width: int, kernel: int, stride: int = 1, padding: int = 0, output_padding: int = 0) -> int:
    """Spatial size after a transposed convolution, the inverse of ``conv_output_size``."""
    return (width - 1) * stride - 2 * padding + kernel + output_padding


def same_padding(kernel: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that keeps the size at stride 1, TensorFlow's
    'SAME': an even kernel puts the extra column on the right and the extra row at the bottom."""
    before = (kernel - 1) // 2
    after = kernel - 1 - before
    return (before, after, before, after)


def conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: str | int = "same",
         batch_norm: bool = False) -> nn.Sequential:
    """Convolution and optional batch norm. ``padding="same"`` works for even kernels too."""
    layers: list[nn.Module] = []
    if padding == "same":
        if stride != 1:
            raise ValueError("'same' padding is defined here for stride 1 only")
        left, right, top, bottom = same_padding(kernel)
        if left == right:
            pad = left
        else:  # asymmetric: pad explicitly, as TF does for even kernels
            layers.append(nn.ZeroPad2d((left, right, top, bottom)))
            pad = 0
    else:
        pad = int(padding)
    layers.append(nn.Conv2d(cin, cout, kernel, stride, pad, bias=not batch_norm))
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    return nn.Sequential(*layers)


def conv_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: str | int = "same",
              batch_norm: bool = False) -> nn.Sequential:
    """Convolution, optional batch norm, then ReLU."""
    return nn.Sequential(*conv(cin, cout, kernel, stride, padding, batch_norm), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """x + BN(conv(ReLU(BN(conv(x))))), two 3x3 convolutions of ``channels`` channels around an
    identity shortcut (a ResNet basic block without its last ReLU). The last batch norm's scale
    starts at zero, so a net deepened by such blocks computes what it did before: a smaller
    net's weights (``--init``) carry over unchanged and training starts from its function."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_relu(channels, channels, 3, batch_norm=True),
                                  conv(channels, channels, 3, batch_norm=True))
        nn.init.zeros_(self.body[-1][-1].weight)

    def forward(self, x):
        return x + self.body(x)


def linear_relu(fin: int, fout: int, dropout: float = 0.0) -> nn.Sequential:
    """Fully connected layer and ReLU, with optional dropout after it."""
    layers: list[nn.Module] = [nn.Linear(fin, fout), nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MaxPool2x2(nn.MaxPool2d):
    """2x2 max-pool with stride 2. Where no gradient is needed (inference) and the sides are
    even, it takes the max of the four strided sub-grids: the same numbers, measured about twice
    as fast as the library kernel on channels-last bf16 tensors on CPU."""

    def __init__(self, ceil_mode: bool = False):
        super().__init__(2, 2, 0, ceil_mode=ceil_mode)

    def forward(self, x):
        if x.requires_grad or x.shape[-1] % 2 or x.shape[-2] % 2:
            return super().forward(x)
        top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
        bottom = torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2])
        return torch.maximum(top, bottom)


def pool(kernel: int = 2, stride: int | None = None, kind: str = "max", padding: int = 0,
         ceil_mode: bool = False) -> nn.Module:
    """Max or average pooling: 2/2 halves the size, 3/2 is AlexNet's overlapping pool.

    ``ceil_mode=True`` keeps a partial window at the edge, which is what TF's 'SAME' max pool
    does for stride 2 on odd sizes.
    """
    stride = kernel if stride is None else stride
    if kind == "max" and kernel == 2 and stride == 2 and padding == 0:
        return MaxPool2x2(ceil_mode)
    elif kind == "max":
        return nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    elif kind == "avg":
        return nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=False)
    else:
        raise ValueError(f"unknown pooling kind {kind!r} (use 'max' or 'avg')")


def bilinear_kernel(factor: int) -> torch.Tensor:
    """The (2f - f % 2) square kernel whose transposed convolution at stride f is bilinear upsampling."""
    size = 2 * factor - factor % 2
    centre = (size - 1) / 2 if size % 2 == 1 else factor - 0.5
    grid = torch.arange(size, dtype=torch.float32)
    ramp = 1 - (grid - centre).abs() / factor  # (size,)
    return ramp[:, None] * ramp[None, :]  # (size, size)


def deconv(cin: int, cout: int, factor: int = 2, bilinear: bool = False, bias: bool = True) -> nn.ConvTranspose2d:
    """Transposed convolution that upsamples by ``factor`` (output = input * factor).

    With ``bilinear=True`` (needs cin == cout) each channel starts as bilinear interpolation of
    itself, the FCN paper's initialisation; training can then refine it.
    """
    kernel = 2 * factor - factor % 2
    padding = math.ceil((factor - 1) / 2)
    layer = nn.ConvTranspose2d(cin, cout, kernel, stride=factor, padding=padding, bias=bias)
    if bilinear:
        if cin != cout:
            raise ValueError(f"bilinear deconvolution maps channels to themselves (got {cin} -> {cout})")
        with torch.no_grad():
            layer.weight.zero_()
            kern = bilinear_kernel(factor)
            for c in range(cin):
                layer.weight[c, c] = kern
            if bias:
                layer.bias.zero_()
    return layer


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """For inference: every eval-mode BatchNorm2d that directly follows a Conv2d in an
    ``nn.Sequential`` is folded into that convolution's weights and bias and replaced by an
    identity. The outputs are the same up to rounding and one pass over the activations is
    saved. Changes ``module`` in place and returns it; it must not be trained afterwards."""
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(1, len(seq)):
            c, bn = seq[i - 1], seq[i]
            if not (type(c) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats):
                continue
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (cout,)
                bias = c.bias if c.bias is not None else torch.zeros_like(bn.running_mean)
                fused = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding,
                                  c.dilation, c.groups, bias=True, padding_mode=c.padding_mode)
                fused.weight.copy_(c.weight * scale[:, None, None, None])
                fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
            layout = torch.channels_last if c.weight.is_contiguous(memory_format=torch.channels_last) \
                else torch.contiguous_format
            seq[i - 1], seq[i] = fused.to(c.weight.device, memory_format=layout), nn.Identity()
    return module


def xavier_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every conv and linear layer, as the tutorial."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
