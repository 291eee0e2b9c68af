"""A small feed-forward style network (Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time
Style Transfer", ECCV 2016), sized for CPU training.

Contract: input Tensor[B, 3, H, W] float, RGB normalized with ImageNet mean/std
(cvexport.preprocess), H and W divisible by 4; output Tensor[B, 3, H, W] float RGB in [0, 1]
(a sigmoid inside the model, so the range holds without clamping and gradients never vanish
at a clamp edge).

Export choices: zero padding inside the convs (no Pad node; reflect-pad would add one),
InstanceNormalization, nearest Resize x2 followed by a conv instead of a transposed conv
(Odena et al., "Deconvolution and Checkerboard Artifacts", 2016) -- all plain ONNX opset-18
ops TensorRT runs natively.
"""

from __future__ import annotations

from torch import Tensor, nn

STYLE_INPUT_SIZE = 256  # the export size (H = W); any multiple of 4 works in PyTorch
CHANNELS = (16, 32, 64)
RESIDUAL_BLOCKS = 4


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2), nn.InstanceNorm2d(cout, affine=True)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels, 3), _conv(channels, channels, 3, relu=False))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class StyleNet(nn.Module):
    """9x9 conv -> two stride-2 convs -> residual blocks -> two (nearest x2 + conv) -> 9x9 conv -> sigmoid."""

    def __init__(self, channels: tuple[int, int, int] = CHANNELS, blocks: int = RESIDUAL_BLOCKS):
        super().__init__()
        c1, c2, c3 = channels
        self.down = nn.Sequential(_conv(3, c1, 9), _conv(c1, c2, 3, 2), _conv(c2, c3, 3, 2))
        self.res = nn.Sequential(*[ResidualBlock(c3) for _ in range(blocks)])
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), _conv(c3, c2, 3),
            nn.Upsample(scale_factor=2, mode="nearest"), _conv(c2, c1, 3),
            nn.Conv2d(c1, 3, 9, padding=4),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.res(self.down(x))).sigmoid()


def build_style_net() -> StyleNet:
    """An untrained StyleNet in eval mode (weights from torch's RNG: seed it first)."""
    return StyleNet().eval()
