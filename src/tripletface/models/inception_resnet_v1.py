"""Inception-ResNet-v1 (Szegedy et al. 2016, figures 10-14), FaceNet's encoder, for GPU users.

Layer sizes follow the paper; the classifier is replaced by FaceNet's head (Schroff et al. 2015):
average pooling, dropout, a linear map to the embedding and L2 normalisation. At the 160 x 160
input FaceNet implementations use, the last feature map is 3 x 3 x 1792.
"""

import torch
import torch.nn.functional as F
from torch import nn

from tripletface.errors import InputError
from tripletface.models.base import Encoder


class ConvBN(nn.Sequential):
    """Convolution, BatchNorm, ReLU; ``padding`` "valid" (the paper's V) or "same"."""

    input_size = (160, 160)

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding: str = "same"):
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        pad = (kh // 2, kw // 2) if padding == "same" else (0, 0)
        super().__init__(
            nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=pad, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3),
            nn.ReLU(inplace=True),
        )


class Residual(nn.Module):
    """x + scale * W(concat(branches(x))), then ReLU; W is a linear 1 x 1 convolution.

    The paper scales residuals by 0.1-0.3 before the addition to keep training stable (sec. 3.3).
    """

    def __init__(self, channels: int, branches: list[nn.Module], mixed: int, scale: float):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.project = nn.Conv2d(mixed, channels, 1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([branch(x) for branch in self.branches], dim=1)
        return F.relu(x + self.scale * self.project(mixed))


def block_a(scale: float = 0.17) -> Residual:
    """Inception-ResNet-A on 35 x 35 x 256 (figure 10)."""
    return Residual(
        256,
        [
            ConvBN(256, 32, 1),
            nn.Sequential(ConvBN(256, 32, 1), ConvBN(32, 32, 3)),
            nn.Sequential(ConvBN(256, 32, 1), ConvBN(32, 32, 3), ConvBN(32, 32, 3)),
        ],
        mixed=96,
        scale=scale,
    )


def factorised_block(channels: int, inner: int, k: int, scale: float) -> Residual:
    """A 1 x 1 branch beside a 1 x 1 -> 1 x k -> k x 1 branch (the shape of blocks B and C)."""
    return Residual(
        channels,
        [
            ConvBN(channels, inner, 1),
            nn.Sequential(
                ConvBN(channels, inner, 1),
                ConvBN(inner, inner, (1, k)),
                ConvBN(inner, inner, (k, 1)),
            ),
        ],
        mixed=2 * inner,
        scale=scale,
    )


def block_b(scale: float = 0.10) -> Residual:
    """Inception-ResNet-B on 17 x 17 x 896 (figure 11)."""
    return factorised_block(896, 128, 7, scale)


def block_c(scale: float = 0.20) -> Residual:
    """Inception-ResNet-C on 8 x 8 x 1792 (figure 13)."""
    return factorised_block(1792, 192, 3, scale)


class Concat(nn.Module):
    """Runs branches side by side and concatenates their outputs along the channels."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def reduction_a() -> Concat:
    """35 -> 17, 256 -> 896 channels (figure 7 with k, l, m, n = 192, 192, 256, 384)."""
    return Concat(
        nn.MaxPool2d(3, stride=2),
        ConvBN(256, 384, 3, stride=2, padding="valid"),
        nn.Sequential(
            ConvBN(256, 192, 1), ConvBN(192, 192, 3), ConvBN(192, 256, 3, 2, padding="valid")
        ),
    )


def reduction_b() -> Concat:
    """17 -> 8, 896 -> 1792 channels (figure 12)."""
    return Concat(
        nn.MaxPool2d(3, stride=2),
        nn.Sequential(ConvBN(896, 256, 1), ConvBN(256, 384, 3, 2, padding="valid")),
        nn.Sequential(ConvBN(896, 256, 1), ConvBN(256, 256, 3, 2, padding="valid")),
        nn.Sequential(
            ConvBN(896, 256, 1), ConvBN(256, 256, 3), ConvBN(256, 256, 3, 2, padding="valid")
        ),
    )


def stem() -> nn.Sequential:
    """299 x 299 x 3 -> 35 x 35 x 256 (figure 14)."""
    return nn.Sequential(
        ConvBN(3, 32, 3, stride=2, padding="valid"),
        ConvBN(32, 32, 3, padding="valid"),
        ConvBN(32, 64, 3),
        nn.MaxPool2d(3, stride=2),
        ConvBN(64, 80, 1),
        ConvBN(80, 192, 3, padding="valid"),
        ConvBN(192, 256, 3, stride=2, padding="valid"),
    )


class InceptionResnetV1(Encoder):
    """FaceNet's Inception-ResNet-v1 encoder: 5 x A, reduction, 10 x B, reduction, 5 x C."""

    def __init__(
        self,
        embedding_dim: int = 128,
        input_size: int | tuple[int, int] = 160,
        dropout: float = 0.2,
    ):
        super().__init__()
        height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
        if min(height, width) < 75:
            # Its stem and two reductions shrink smaller images to nothing.
            raise InputError(
                f"inception-resnet-v1 takes images of at least 75 x 75 pixels, not {height} x "
                f"{width}: give --size 75 or more"
            )
        self.init_kwargs = {
            "embedding_dim": embedding_dim,
            "input_size": [height, width],
            "dropout": dropout,
        }
        self.embedding_dim = embedding_dim
        self.input_size = (height, width)
        self.features = nn.Sequential(
            stem(),
            *[block_a() for _ in range(5)],
            reduction_a(),
            *[block_b() for _ in range(10)],
            reduction_b(),
            *[block_c() for _ in range(5)],
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            # FaceNet keeps 80% of the pooled features in training.
            nn.Dropout(dropout),
            nn.Linear(1792, embedding_dim, bias=False),
            nn.BatchNorm1d(embedding_dim, eps=1e-3),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W pixels in 0-255 -> N x embedding_dim unit-length rows."""
        x = (images.float() - 127.5) / 128.0
        return F.normalize(self.head(self.features(x)), dim=1)
