"""The reader of dlib's serialization, on the real encoder file and on damaged copies."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tripletface.errors import InputError
from tripletface.models.dlib_files import FACE_ENCODER, dlib_model_path
from tripletface.models.dlib_format import (
    ANET_STAGES,
    Affine,
    Conv,
    DlibStream,
    Linear,
    Plain,
    Pool,
    anet_layer_kinds,
    parse_face_encoder,
    read_face_encoder,
)


def _encode_int(value: int) -> bytes:
    """dlib's integer encoding, written independently: control byte, then the magnitude."""
    magnitude = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
    return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude


@pytest.fixture(scope="module")
def data() -> bytes:
    return dlib_model_path(FACE_ENCODER).read_bytes()


@pytest.fixture(scope="module")
def network():
    return read_face_encoder(dlib_model_path(FACE_ENCODER))


def test_layer_list_is_anet_type(network):
    kinds = [getattr(layer, "kind", None) or type(layer).__name__ for layer in network.layers]
    assert len(network.layers) == len(anet_layer_kinds()) == 130
    assert kinds.count("Conv") == kinds.count("Affine") == 29
    assert kinds.count("Linear") == 1 and kinds.count("add_prev") == 14
    assert kinds.count("tag") == 18 and kinds.count("skip") == 4
    for layer, kind in zip(network.layers, anet_layer_kinds(), strict=True):
        assert type(layer) is {"con": Conv, "affine": Affine, "fc": Linear}.get(
            kind, Pool if kind.endswith("pool") else Plain
        )


def test_input_and_loss_settings(network):
    assert network.input_size == (150, 150)
    np.testing.assert_allclose(network.mean, (122.782, 117.001, 104.298), atol=1e-4)
    assert network.margin == pytest.approx(0.04) and network.distance_threshold == pytest.approx(
        0.6
    )


def test_shapes_follow_the_stages(network):
    convs = [layer for layer in network.layers if isinstance(layer, Conv)]
    affines = [layer for layer in network.layers if isinstance(layer, Affine)]
    assert convs[0].weight.shape == (32, 3, 7, 7) and (convs[0].stride, convs[0].padding) == (2, 0)
    expected, cin = [], 32
    for channels, blocks, first_down in ANET_STAGES:
        for block in range(blocks):
            down = first_down and block == 0
            expected += [((channels, cin, 3, 3), 2 if down else 1, 0 if down else 1)]
            expected += [((channels, channels, 3, 3), 1, 1)]
            cin = channels
    got = [(conv.weight.shape, conv.stride, conv.padding) for conv in convs[1:]]
    assert got == expected
    for conv, affine in zip(convs, affines, strict=True):
        assert (
            conv.bias.shape == affine.scale.shape == affine.shift.shape == (conv.weight.shape[0],)
        )
        assert np.isfinite(conv.weight).all() and np.abs(conv.weight).max() > 0
    (linear,) = [layer for layer in network.layers if isinstance(layer, Linear)]
    assert linear.weight.shape == (128, 256)
    pools = [layer for layer in network.layers if isinstance(layer, Pool)]
    assert pools[0] == Pool("max", 3, 2, 0) and pools[-1] == Pool("avg", 0, 1, 0)
    assert pools[1:-1] == [Pool("avg", 2, 2, 0)] * 4


def test_fc_weight_is_transposed_from_file_order(data, network):
    # The fc parameters are the last tensor of the file, stored (256 in, 128 out) row-major,
    # before the 4 multipliers, 3 flags and 3 empty tensors of its wrapper.
    (linear,) = [layer for layer in network.layers if isinstance(layer, Linear)]
    stored = np.frombuffer(data, "<f4", 256 * 128, data.rfind(b"fc_2") + 4 + 16).reshape(256, 128)
    np.testing.assert_array_equal(linear.weight, stored.T)


def test_reader_ends_exactly_at_end_of_file(data):
    with pytest.raises(InputError, match="1 unexpected bytes"):
        parse_face_encoder(data + b"\x00", "extended.dat")


def test_truncated_file_is_a_clear_error(data, tmp_path):
    path = tmp_path / "truncated.dat"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"truncated\.dat: truncated.*reinstall"):
        read_face_encoder(path)


def test_corrupt_type_string_is_a_clear_error(data, tmp_path):
    path = tmp_path / "corrupt.dat"
    path.write_bytes(data.replace(b"affine_", b"affin3_", 1))
    with pytest.raises(InputError, match=r"corrupt\.dat: layer 1 is 'affin3_', expected 'affine_'"):
        read_face_encoder(path)


@pytest.mark.parametrize("garbage", [b"", b"\x01", b"\xff" * 64, b"\x01\x01\x0dloss_metric_"])
def test_garbage_is_a_clear_error(garbage, tmp_path):
    path = tmp_path / "garbage.dat"
    path.write_bytes(garbage)
    with pytest.raises(InputError, match=r"garbage\.dat"):
        read_face_encoder(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_face_encoder(tmp_path / "absent.dat")


@given(st.lists(st.integers(-(2**63) + 1, 2**63 - 1), max_size=20))
def test_integers_decode_as_encoded(values):
    stream = DlibStream(b"".join(map(_encode_int, values)), "ints")
    assert [stream.integer() for _ in values] == values
    assert stream.remaining == 0


@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_reals_decode_as_mantissa_times_power_of_two(value):
    mantissa, exponent = math.frexp(value)
    scaled = int(mantissa * 2**24)
    stream = DlibStream(_encode_int(scaled) + _encode_int(exponent - 24), "real")
    assert stream.real() == value


def test_strings_flags_and_tensors_decode():
    values = np.arange(6, dtype="<f4")
    raw = (
        _encode_int(5)
        + b"con_4"
        + b"10"
        + b"".join(map(_encode_int, [2, 1, 2, 3, 1]))
        + values.tobytes()
    )
    stream = DlibStream(raw, "mixed")
    assert (stream.string(), stream.flag(), stream.flag()) == ("con_4", True, False)
    np.testing.assert_array_equal(stream.tensor(), values.reshape(1, 2, 3, 1))
    with pytest.raises(InputError, match="mixed: truncated"):
        stream.integer()
