"""dlib-resnet: parity with dlib's encoder on real face chips, inference folding, fine-tuning."""

import copy
import dataclasses
import math

import dlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from skimage.data import astronaut, camera

from tripletface.errors import InputError
from tripletface.models import encoder_class, load_encoder
from tripletface.models.dlib_files import FACE_ENCODER, LANDMARKS_5, dlib_model_path
from tripletface.models.dlib_format import Conv, read_face_encoder
from tripletface.models.dlib_resnet import DlibResNet, add_padded


def _moved(shape: dlib.full_object_detection, angle: float, scale: float, shift: float):
    """The landmarks turned by ``angle`` degrees and scaled about their centre, then shifted."""
    points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], float)
    centre = points.mean(axis=0)
    turn = math.radians(angle)
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    moved = (points - centre) @ rotation.T * scale + centre + shift
    return dlib.full_object_detection(
        shape.rect, [dlib.point(round(x), round(y)) for x, y in moved]
    )


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    """K x 150 x 150 x 3 uint8 distinct chips: the astronaut aligned several ways, a non-face."""
    image = astronaut()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_5)))
    box = max(detector(image, 1), key=lambda rect: rect.area())
    shape = predictor(image, box)
    aligned = [
        dlib.get_face_chip(image, _moved(shape, angle, scale, shift), size=150, padding=0.25)
        for angle, scale, shift in [(0, 1, 0), (12, 1, 0), (-8, 1.15, 3), (0, 0.9, -4)]
    ]
    mirrored = aligned[0][:, ::-1]
    recoloured = np.clip(aligned[1].astype(float) * [1.2, 0.9, 0.7] + 10, 0, 255)
    gray = camera()[180:330, 200:350]
    return np.ascontiguousarray(
        np.stack([*aligned, mirrored, recoloured.astype(np.uint8), np.dstack([gray] * 3)])
    )


@pytest.fixture(scope="module")
def dlib_descriptors(chips) -> np.ndarray:
    """dlib's compute_face_descriptor on each chip: the reference."""
    reference = dlib.face_recognition_model_v1(str(dlib_model_path(FACE_ENCODER)))
    return np.array([reference.compute_face_descriptor(chip) for chip in chips])


@pytest.fixture(scope="module")
def model() -> DlibResNet:
    return DlibResNet.pretrained()


def _batch(chips: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(chips).permute(0, 3, 1, 2)


def test_chips_are_distinct(chips):
    flat = chips.reshape(len(chips), -1).astype(int)
    assert all(np.abs(flat[i] - flat[j]).mean() > 5 for i in range(len(flat)) for j in range(i))


@pytest.mark.parametrize("path", ["folded", "layered"])
def test_matches_dlib_on_real_chips(model, chips, dlib_descriptors, path):
    # Inference mode runs the folded convolutions, autograd the separate affine layers.
    context = torch.inference_mode() if path == "folded" else torch.enable_grad()
    with context:
        ours = model(_batch(chips)).detach().numpy()
    assert ours.shape == (len(chips), 128)
    assert np.abs(ours - dlib_descriptors).max() <= 1e-4
    # the check can fail: descriptors differ between chips far more than the tolerance
    assert np.abs(dlib_descriptors[0] - dlib_descriptors[1:]).max() > 1e-2


def test_uint8_and_float_inputs_agree(model, chips):
    with torch.inference_mode():
        assert torch.equal(model(_batch(chips[:2])), model(_batch(chips[:2]).float()))


def test_normalized_form_is_unit_length_raw_direction(model, chips):
    unit = DlibResNet(normalize=True)
    unit.load_state_dict(model.state_dict())
    unit.eval()
    with torch.inference_mode():
        raw, normed = model(_batch(chips[:3])), unit(_batch(chips[:3]))
    assert unit.normalized and not model.normalized
    torch.testing.assert_close(normed.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(normed, F.normalize(raw, dim=1))


def test_registered_and_loaded_pretrained(model):
    assert encoder_class("dlib-resnet") is DlibResNet
    loaded = load_encoder("dlib-resnet")
    assert isinstance(loaded, DlibResNet) and not loaded.training
    assert loaded.fingerprint() == model.fingerprint()
    assert (loaded.embedding_dim, loaded.input_size, loaded.chip_padding) == (128, (150, 150), 0.25)
    assert loaded.init_kwargs == {"normalize": False}


@pytest.mark.parametrize("shape", [(2, 3, 112, 112), (3, 150, 150), (1, 1, 150, 150)])
def test_wrong_input_shape_is_a_clear_error(model, shape):
    with pytest.raises(InputError, match="150 x 150"):
        model(torch.zeros(shape))


def test_folded_weights_follow_parameter_changes(model, chips):
    changed = copy.deepcopy(model)
    with torch.inference_mode():
        before = changed(_batch(chips[:1]))
    with torch.no_grad():
        changed.stages[1][0].conv2.scale.mul_(1.5)
        changed.stem.conv.bias.add_(0.1)
    with torch.inference_mode():
        folded = changed(_batch(chips[:1]))
    layered = changed(_batch(chips[:1])).detach()
    assert (folded - before).abs().max() > 1e-3
    torch.testing.assert_close(folded, layered, atol=1e-5, rtol=1e-4)


def test_freeze_stops_gradients_into_early_stages(model, chips):
    tuned = copy.deepcopy(model).train().freeze(2)
    frozen = [tuned.stem, tuned.stages[0], tuned.stages[1]]
    assert all(not p.requires_grad for part in frozen for p in part.parameters())
    before = {name: p.detach().clone() for name, p in tuned.named_parameters()}
    optimizer = torch.optim.SGD([p for p in tuned.parameters() if p.requires_grad], lr=1e-2)
    tuned(_batch(chips[:1])).pow(2).sum().backward()
    optimizer.step()
    for name, p in tuned.named_parameters():
        moved = not torch.equal(p.detach(), before[name])
        assert moved == p.requires_grad, name
    assert tuned.freeze(0) is tuned
    assert all(p.requires_grad for p in tuned.parameters())
    with pytest.raises(InputError, match="freeze"):
        tuned.freeze(6)


def test_every_weight_is_a_trainable_parameter(model):
    names = {name for name, _ in model.named_parameters()}
    # 29 convolutions with bias and affine scale and shift, and the head
    assert len(names) == 29 * 4 + 1
    assert sum(p.numel() for p in model.parameters()) > 5_000_000


@given(
    st.integers(1, 2),
    st.tuples(*[st.integers(1, 4)] * 3),
    st.tuples(*[st.integers(1, 4)] * 3),
)
def test_add_padded_matches_zero_padded_sum(batch, size_a, size_b):
    generator = torch.Generator().manual_seed(sum(size_a) * 7 + sum(size_b))
    a = torch.randn(batch, *size_a, generator=generator)
    b = torch.randn(batch, *size_b, generator=generator)
    big = [max(p, q) for p, q in zip(size_a, size_b, strict=True)]
    expected = np.zeros((batch, *big))
    expected[:, : size_a[0], : size_a[1], : size_a[2]] += a.numpy()
    expected[:, : size_b[0], : size_b[1], : size_b[2]] += b.numpy()
    np.testing.assert_allclose(add_padded(a, b).numpy(), expected, atol=1e-6)


def test_another_network_in_the_file_is_refused():
    network = read_face_encoder(dlib_model_path(FACE_ENCODER))
    layers = list(network.layers)
    first = layers.index(next(layer for layer in layers if isinstance(layer, Conv)))
    layers[first] = dataclasses.replace(layers[first], stride=1)
    with pytest.raises(InputError, match="another network"):
        DlibResNet().load_dlib(dataclasses.replace(network, layers=layers))
    with pytest.raises(InputError, match="not the face recognition ResNet"):
        DlibResNet().load_dlib(dataclasses.replace(network, input_size=(200, 200)))
