"""A reader of dlib's serialization of its face recognition ResNet (``anet_type``).

The file has no header and no layer list: each wrapper of the network writes its version, then its
whole sub-network, then its own layer, so ~130 version numbers come first and the layers follow
input-first in forward order. Tag and skip wrappers write nothing but their version, so the walk
follows the known layer list of ``anet_type`` (dlib's ``dnn_face_recognition_ex.cpp``) and checks
every layer's type string against it. Only the layer types this network uses are understood.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tripletface.errors import InputError

#: (channels, residual blocks, whether the first block halves the resolution) per stage of
#: ``anet_type``, input side first (dlib's alevel4 ... alevel0).
ANET_STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)
#: Channels of the stem convolution and length of the descriptor.
ANET_STEM_CHANNELS = 32
ANET_EMBEDDING_DIM = 128

# Type strings dlib writes for each layer kind; tag and skip wrappers write none.
_TYPE_STRINGS = {
    "con": "con_4",
    "affine": "affine_",
    "relu": "relu_",
    "max_pool": "max_pool_2",
    "avg_pool": "avg_pool_2",
    "add_prev": "add_prev_",
    "fc": "fc_2",
}
_WRAPPERS = ("tag", "skip")
_RESTORE_HINT = "reinstall it with pip install --force-reinstall face-recognition-models"


@dataclass(frozen=True)
class Conv:
    """Convolution with bias; ``weight`` is O x I x kH x kW (PyTorch's layout)."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int


@dataclass(frozen=True)
class Affine:
    """Per-channel ``x * scale + shift`` (dlib's trained batch norm, already folded)."""

    scale: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True)
class Pool:
    """Pooling, "max" or "avg"; ``size`` 0 pools the whole map (avg_pool_everything)."""

    kind: str
    size: int
    stride: int
    padding: int


@dataclass(frozen=True)
class Plain:
    """A layer without parameters: "relu", "add_prev" (residual sum), "tag" or "skip"."""

    kind: str


@dataclass(frozen=True)
class Linear:
    """Fully connected layer without bias; ``weight`` is out x in (PyTorch's layout)."""

    weight: np.ndarray


Layer = Conv | Affine | Pool | Plain | Linear


@dataclass(frozen=True)
class DlibNetwork:
    """The parsed network: input normalisation, layers in forward order, metric-loss settings."""

    mean: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[Layer]
    margin: float
    distance_threshold: float


def anet_layer_kinds() -> list[str]:
    """Kinds of the 130 wrapped layers of ``anet_type`` in forward order (input side first)."""
    kinds = ["con", "affine", "relu", "max_pool"]
    for _, blocks, first_down in ANET_STAGES:
        for block in range(blocks):
            down = first_down and block == 0
            kinds += ["tag", "con", "affine", "relu", "con", "affine"]
            kinds += ["tag", "skip", "avg_pool"] if down else []
            kinds += ["add_prev", "relu"]
    return [*kinds, "avg_pool", "fc"]


class DlibStream:
    """Cursor over dlib-serialised bytes; a read past the end or a malformed value is InputError."""

    def __init__(self, data: bytes, source: str):
        self.data = memoryview(data)
        self.source = source
        self.offset = 0

    def fail(self, problem: str) -> InputError:
        """The InputError for ``problem`` at the current offset, naming the file."""
        return InputError(
            f"{self.source}: {problem} at byte {self.offset}; the file is corrupt or not dlib's "
            f"face recognition ResNet: {_RESTORE_HINT}"
        )

    def take(self, count: int) -> memoryview:
        """The next ``count`` raw bytes."""
        if count < 0 or self.offset + count > len(self.data):
            raise self.fail(f"truncated: {count} more bytes needed, {self.remaining} left")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self.data) - self.offset

    def integer(self) -> int:
        """Control byte (low nibble = byte count, 0x80 = negative), then little-endian magnitude."""
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        magnitude = int.from_bytes(self.take(size), "little")
        return -magnitude if control & 0x80 else magnitude

    def real(self) -> float:
        """A scalar float: integer mantissa times two to an integer exponent."""
        mantissa = self.integer()
        exponent = self.integer()
        if abs(exponent) > 1100:
            raise self.fail(f"float exponent {exponent} out of range")
        return float(mantissa * 2.0**exponent)

    def string(self) -> str:
        """A length, then that many bytes of text."""
        raw = self.take(self.integer())
        try:
            return bytes(raw).decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("a type string that is not text") from None

    def flag(self) -> bool:
        """A bool, written as the character '0' or '1'."""
        char = bytes(self.take(1))
        if char not in (b"0", b"1"):
            raise self.fail(f"bad bool {char!r}")
        return char == b"1"

    def version(self, expected: int, what: str) -> None:
        """Read a version number and check that it is ``expected``."""
        found = self.integer()
        if found != expected:
            raise self.fail(f"{what} has version {found}, expected {expected}")

    def shape(self) -> tuple[int, int, int, int]:
        """Four non-negative sizes (num_samples, k, rows, cols)."""
        dims = tuple(self.integer() for _ in range(4))
        if min(dims) < 0:
            raise self.fail(f"negative tensor shape {dims}")
        return dims

    def tensor(self) -> np.ndarray:
        """Tensor version 2: its shape, then raw little-endian float32 values (a copy)."""
        self.version(2, "tensor")
        dims = self.shape()
        count = int(np.prod(dims, dtype=np.int64))
        raw = self.take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias(self) -> tuple[int, int, int, int]:
        """An alias_tensor (a view into a layer's parameter tensor): version 1, then its shape."""
        self.version(1, "alias tensor")
        return self.shape()


def _split(params: np.ndarray, shapes: list[tuple[int, ...]], stream: DlibStream) -> list:
    """Consecutive views of the flat parameter tensor with the given shapes, covering all of it."""
    flat = params.reshape(-1)
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    if sum(sizes) != flat.size:
        raise stream.fail(f"parameter tensor of {flat.size} values does not hold {shapes}")
    parts, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        parts.append(flat[start : start + size].reshape(shape))
        start += size
    return parts


def _read_conv(stream: DlibStream) -> Conv:
    params = stream.tensor()
    filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (stream.integer() for _ in range(7))
    weight_shape, bias_shape = stream.alias(), stream.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers: training settings only
        stream.real()
    if stride_y != stride_x or pad_y != pad_x or weight_shape[0] != filters:
        raise stream.fail("a convolution with unequal strides, paddings or filter counts")
    if weight_shape[2:] != (rows, cols) or bias_shape != (1, filters, 1, 1):
        raise stream.fail(f"convolution shapes {weight_shape} and {bias_shape} disagree")
    weight, bias = _split(params, [weight_shape, (filters,)], stream)
    return Conv(weight, bias, stride_y, pad_y)


def _read_affine(stream: DlibStream) -> Affine:
    params = stream.tensor()
    scale_shape, shift_shape = stream.alias(), stream.alias()
    mode = stream.integer()
    if mode != 0 or scale_shape != shift_shape or scale_shape[::2] != (1, 1):
        raise stream.fail(f"an affine layer that is not per channel (mode {mode}, {scale_shape})")
    scale, shift = _split(params, [(scale_shape[1],), (shift_shape[1],)], stream)
    return Affine(scale, shift)


def _read_pool(kind: str, stream: DlibStream) -> Pool:
    rows, cols, stride_y, stride_x, pad_y, pad_x = (stream.integer() for _ in range(6))
    if rows != cols or stride_y != stride_x or pad_y != pad_x:
        raise stream.fail("a pooling layer that is not square")
    return Pool(kind.removesuffix("_pool"), rows, stride_y, pad_y)


def _read_fc(stream: DlibStream) -> Linear:
    outputs, inputs = stream.integer(), stream.integer()
    params = stream.tensor()
    weight_shape, bias_shape = stream.alias(), stream.alias()
    bias_mode = stream.integer()
    for _ in range(4):
        stream.real()
    if bias_mode != 1 or weight_shape != (inputs, outputs, 1, 1) or any(bias_shape):
        raise stream.fail(f"a fully connected layer with a bias or shape {weight_shape}")
    (weight,) = _split(params, [(inputs, outputs)], stream)
    return Linear(np.ascontiguousarray(weight.T))


def _read_layer(kind: str, stream: DlibStream, position: int) -> Layer:
    """One layer's own data, after checking its type string; then the wrapper's training state."""
    found = stream.string()
    if found != _TYPE_STRINGS[kind]:
        raise stream.fail(f"layer {position} is {found!r}, expected {_TYPE_STRINGS[kind]!r}")
    if kind == "con":
        layer = _read_conv(stream)
    elif kind == "affine":
        layer = _read_affine(stream)
    elif kind in ("max_pool", "avg_pool"):
        layer = _read_pool(kind, stream)
    elif kind == "fc":
        layer = _read_fc(stream)
    else:
        layer = Plain(kind)
    # setup-called, gradient-stale and outputs-disabled flags, then x_grad, cached_output and
    # params_grad tensors: empty in a saved network, read only to move past them.
    for _ in range(3):
        stream.flag()
    for _ in range(3):
        stream.tensor()
    return layer


def parse_face_encoder(data: bytes, source: str = "<bytes>") -> DlibNetwork:
    """Parse dlib's serialised ``anet_type``; ``source`` names the data in error messages."""
    stream = DlibStream(data, source)
    stream.version(1, "the metric loss layer")
    if stream.string() != "loss_metric_2":
        raise stream.fail("the file does not start with dlib's metric loss layer")
    margin, threshold = stream.real(), stream.real()
    kinds = anet_layer_kinds()
    # Outermost wrapper first; the one holding the input layer writes version 3.
    for depth, kind in enumerate(reversed(kinds)):
        expected = 1 if kind in _WRAPPERS else 3 if depth == len(kinds) - 1 else 2
        stream.version(expected, f"wrapper of {kind} layer {len(kinds) - 1 - depth}")
    if stream.string() != "input_rgb_image_sized":
        raise stream.fail("the input layer is not input_rgb_image_sized")
    mean = (stream.real(), stream.real(), stream.real())
    size = (stream.integer(), stream.integer())
    layers: list[Layer] = []
    for position, kind in enumerate(kinds):
        if kind in _WRAPPERS:
            layers.append(Plain(kind))
            continue
        layers.append(_read_layer(kind, stream, position))
        if position == 0:
            stream.integer()  # sample expansion factor of the wrapper around the input layer
    if stream.remaining:
        raise stream.fail(f"{stream.remaining} unexpected bytes after the last layer")
    return DlibNetwork(mean, size, layers, margin, threshold)


def read_face_encoder(path: str | Path) -> DlibNetwork:
    """Read dlib_face_recognition_resnet_model_v1.dat (or a file of the same network)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}; {_RESTORE_HINT}") from None
    return parse_face_encoder(data, str(path))
