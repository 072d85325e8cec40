"""dlib's face recognition ResNet (``anet_type``) rebuilt in PyTorch, with its pretrained weights.

The network (He et al. 2016 residual blocks, 29 convolutions, 128-d output) was trained by Davis
King with a metric loss; face_recognition reports 99.38% on LFW for it. The weights come from
``dlib_face_recognition_resnet_model_v1.dat`` in the face-recognition-models package, read by
``tripletface.models.dlib_format``. Its conventions, kept here to reproduce dlib's outputs:
input (pixel - mean) / 256 with per-channel means from the file; strided convolutions and pools
without padding; residual sums zero-pad the smaller operand at the end of channels, rows and
columns; a global average pool and a 128-d linear map without bias.
"""

import torch
import torch.nn.functional as F
from torch import nn

from tripletface.errors import InputError
from tripletface.models.base import Encoder
from tripletface.models.dlib_files import FACE_ENCODER, dlib_model_path
from tripletface.models.dlib_format import (
    ANET_EMBEDDING_DIM,
    ANET_STAGES,
    ANET_STEM_CHANNELS,
    Affine,
    Conv,
    DlibNetwork,
    Linear,
    Pool,
    read_face_encoder,
)

# dlib's input_rgb_image defaults, the values its pretrained file stores as well.
_DLIB_MEAN = (122.782, 117.001, 104.298)
_STEM_POOL = Pool("max", 3, 2, 0)
_SHORTCUT_POOL = Pool("avg", 2, 2, 0)
_GLOBAL_POOL = Pool("avg", 0, 1, 0)


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b (N x C x H x W each), the smaller zero-padded at the end of C, H and W (dlib's add)."""
    if a.shape == b.shape:
        return a + b
    size = [max(p, q) for p, q in zip(a.shape[1:], b.shape[1:], strict=True)]

    def pad(x: torch.Tensor) -> torch.Tensor:
        channels, rows, cols = x.shape[1:]
        return F.pad(x, (0, size[2] - cols, 0, size[1] - rows, 0, size[0] - channels))

    return pad(a) + pad(b)


class ConvAffine(nn.Module):
    """A dlib convolution (with bias) and the per-channel affine layer after it.

    Training runs both (all four tensors are trainable); inference without autograd runs one
    convolution whose weights have the affine layer folded in: W * s, b * s + t. The folded
    tensors are cached until a parameter changes (tracked by the tensors' version counters).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        # dlib pads only stride-1 convolutions (by kernel // 2).
        padding = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)
        self.scale = nn.Parameter(torch.ones(cout))
        self.shift = nn.Parameter(torch.zeros(cout))
        self._folded: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.conv.weight, self.conv.bias, self.scale, self.shift)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the single convolution equal to conv followed by affine."""
        tensors = self._tensors()
        key = None
        if not any(t.is_inference() for t in tensors):
            key = tuple((t.data_ptr(), t._version) for t in tensors)
        if key is None or self._folded is None or self._folded[0] != key:
            with torch.no_grad():
                weight = self.conv.weight * self.scale.view(-1, 1, 1, 1)
                weight = weight.contiguous(memory_format=torch.channels_last)
                bias = torch.addcmul(self.shift, self.conv.bias, self.scale)
            self._folded = (key, weight, bias)
        return self._folded[1], self._folded[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            return torch.addcmul(
                self.shift.view(1, -1, 1, 1), self.conv(x), self.scale.view(1, -1, 1, 1)
            )
        weight, bias = self.folded()
        return F.conv2d(x, weight, bias, self.conv.stride, self.conv.padding)

    def load(self, conv: Conv, affine: Affine) -> None:
        """Copy dlib's weights in, after checking they fit this layer."""
        if (
            tuple(conv.weight.shape) != tuple(self.conv.weight.shape)
            or (conv.stride, conv.padding) != (self.conv.stride[0], self.conv.padding[0])
            or affine.scale.shape != (self.conv.out_channels,)
        ):
            raise InputError(
                f"dlib convolution {conv.weight.shape} stride {conv.stride} padding "
                f"{conv.padding} does not fit {self.conv}: the file holds another network"
            )
        with torch.no_grad():
            for target, source in zip(
                self._tensors(), (conv.weight, conv.bias, affine.scale, affine.shift), strict=True
            ):
                target.copy_(torch.from_numpy(source))


class ResidualBlock(nn.Module):
    """relu(shortcut + affine(conv(relu(affine(conv(x)))))), dlib's ``ares`` / ``ares_down``.

    A downsampling block convolves with stride 2 and average-pools the shortcut 2 x 2; the
    shortcut keeps its channels and is zero-padded up to the block's.
    """

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = ConvAffine(cin, cout, 3, 2 if down else 1)
        self.conv2 = ConvAffine(cout, cout, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x), inplace=True))
        shortcut = F.avg_pool2d(x, 2) if self.down else x
        return F.relu(add_padded(y, shortcut), inplace=True)


class DlibResNet(Encoder):
    """dlib's 128-d face encoder: N x 3 x 150 x 150 RGB chips (0-255) -> N x 128 descriptors.

    Chips must be aligned the way dlib aligns them (``dlib.get_face_chip``, size 150, padding
    0.25). Descriptors are raw (dlib's scale, same-person threshold 0.6 in Euclidean distance)
    unless built with ``normalize=True``, which returns unit-length rows.
    """

    embedding_dim = ANET_EMBEDDING_DIM
    input_size = (150, 150)
    chip_padding = 0.25

    def __init__(self, normalize: bool = False):
        super().__init__()
        self.normalized = bool(normalize)
        self.init_kwargs = {"normalize": self.normalized}
        self.register_buffer("mean", torch.tensor(_DLIB_MEAN, dtype=torch.float32))
        self.stem = ConvAffine(3, ANET_STEM_CHANNELS, 7, 2)
        stages, cin = [], ANET_STEM_CHANNELS
        for channels, blocks, first_down in ANET_STAGES:
            stages.append(
                nn.Sequential(
                    *(
                        ResidualBlock(cin if b == 0 else channels, channels, first_down and b == 0)
                        for b in range(blocks)
                    )
                )
            )
            cin = channels
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, ANET_EMBEDDING_DIM, bias=False)
        # channels_last lets oneDNN pick its fastest CPU convolutions.
        self.to(memory_format=torch.channels_last)

    @classmethod
    def pretrained(cls, normalize: bool = False) -> "DlibResNet":
        """The network with dlib's weights from face-recognition-models, in eval mode."""
        model = cls(normalize=normalize)
        model.load_dlib(read_face_encoder(dlib_model_path(FACE_ENCODER)))
        return model.eval()

    def load_dlib(self, network: DlibNetwork) -> None:
        """Copy the weights of a parsed dlib network in; InputError if it is another network."""
        convs = [layer for layer in network.layers if isinstance(layer, Conv)]
        affines = [layer for layer in network.layers if isinstance(layer, Affine)]
        pools = [layer for layer in network.layers if isinstance(layer, Pool)]
        (linear,) = [layer for layer in network.layers if isinstance(layer, Linear)]
        units = [m for m in self.modules() if isinstance(m, ConvAffine)]
        expected_pools = [_STEM_POOL] + [_SHORTCUT_POOL] * (len(pools) - 2) + [_GLOBAL_POOL]
        if (
            len(convs) != len(units)
            or pools != expected_pools
            or network.input_size != self.input_size
            or linear.weight.shape != tuple(self.head.weight.shape)
        ):
            raise InputError(
                "the dlib file is not the face recognition ResNet this encoder rebuilds "
                f"({len(convs)} convolutions, input {network.input_size}): use "
                "dlib_face_recognition_resnet_model_v1.dat"
            )
        for unit, conv, affine in zip(units, convs, affines, strict=True):
            unit.load(conv, affine)
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(linear.weight))
            self.mean.copy_(torch.tensor(network.mean))

    def freeze(self, stages: int) -> "DlibResNet":
        """Stop gradients into the stem and the first ``stages`` residual stages (0 = none).

        There are five stages (32, 64, 128, 256, 256 channels); freeze(5) trains only the head.
        """
        if not 0 <= stages <= len(self.stages):
            raise InputError(
                f"freeze stages must be between 0 and {len(self.stages)}, got {stages}"
            )
        parts = [self.stem, *self.stages]
        for index, part in enumerate(parts):
            part.requires_grad_(stages == 0 or index > stages)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """N x 3 x 150 x 150 RGB 0-255 -> N x 128 descriptors (unit rows if normalized)."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, *self.input_size):
            raise InputError(
                f"dlib-resnet takes N x 3 x 150 x 150 face chips, got {tuple(images.shape)}: "
                "align faces with dlib's convention (size 150, padding 0.25)"
            )
        x = images.to(dtype=torch.float32, memory_format=torch.channels_last)
        x = (x - self.mean.view(1, 3, 1, 1)).div_(256.0)
        # relu and max-pooling commute exactly; pooling first rectifies a quarter of the values.
        x = F.relu(F.max_pool2d(self.stem(x), 3, 2), inplace=True)
        x = self.stages(x)
        x = self.head(x.mean(dim=(2, 3)))
        return F.normalize(x, dim=1) if self.normalized else x
