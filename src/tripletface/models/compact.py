"""A small CNN that trains in minutes on a CPU: the demo's default encoder."""

import torch
import torch.nn.functional as F
from torch import nn

from tripletface.errors import InputError
from tripletface.models.base import Encoder


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    """Convolution without bias (BatchNorm supplies it), BatchNorm, ReLU."""
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class CompactNet(Encoder):
    """Strided stem, three conv-BN-ReLU-maxpool stages, a linear map of the spatial features.

    The head flattens the last feature map instead of averaging it, because aligned faces put the
    eyes and the mouth at fixed places and *where* a feature fires tells identities apart.
    Downsampling by 16 overall: 64 x 64 input -> 4 x 4 x 8w features.
    """

    input_size = (64, 64)

    def __init__(
        self,
        embedding_dim: int = 128,
        input_size: int | tuple[int, int] = 64,
        width: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__()
        height, wide = (input_size, input_size) if isinstance(input_size, int) else input_size
        if min(height, wide) < 16 or width < 1 or embedding_dim < 1:
            raise ValueError("CompactNet needs input_size >= 16, width >= 1, embedding_dim >= 1")
        self.init_kwargs = {
            "embedding_dim": embedding_dim,
            "input_size": [height, wide],
            "width": width,
            "dropout": dropout,
        }
        self.embedding_dim = embedding_dim
        self.input_size = (height, wide)
        self.features = nn.Sequential(
            *_conv_bn_relu(3, width, kernel=5, stride=2),
            *_conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(2 * width, 4 * width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(4 * width, 8 * width),
            nn.MaxPool2d(2),
        )
        # The stem halves rounding up (padding 2, stride 2), each max-pool halves rounding down.
        side_h, side_w = (-(-height // 2)) // 8, (-(-wide // 2)) // 8
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(8 * width * side_h * side_w, embedding_dim),
        )
        # channels_last lets oneDNN pick its fastest CPU convolutions (about 1.3x here).
        self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W pixels in 0-255 -> N x embedding_dim unit-length rows."""
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != self.input_size:
            raise InputError(
                f"CompactNet takes N x 3 x {self.input_size[0]} x {self.input_size[1]} images, "
                f"got {tuple(images.shape)}: resize the images or build it with that input_size"
            )
        x = (images.float() - 127.5) / 128.0
        features = self.features(x.contiguous(memory_format=torch.channels_last))
        # Under bfloat16 autocast (training) the head stays float32: embeddings rounded to 8 bits
        # of mantissa would blur the distances that triplets are chosen by.
        with torch.autocast(images.device.type, enabled=False):
            return F.normalize(self.head(features.float()), dim=1)
