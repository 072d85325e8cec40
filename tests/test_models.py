"""Encoder architectures: the registry contract (shapes, unit rows, 0-255 input) and their sizes."""

import pytest
import torch

from tripletface.errors import InputError
from tripletface.models import create_encoder, default_input, list_encoders
from tripletface.models.base import Encoder
from tripletface.models.compact import CompactNet


def pixels(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_both_architectures_are_registered():
    assert {"compact", "inception-resnet-v1"} <= set(list_encoders())


@pytest.mark.parametrize("size", [64, 48, 40])
def test_compact_gives_unit_rows_of_the_embedding_dim(size):
    model = create_encoder("compact", input_size=size, embedding_dim=32)
    images = pixels(5, size)
    out = model(images)
    assert isinstance(model, Encoder)
    assert out.shape == (5, 32)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    assert model.input_size == (size, size)
    assert model.embedding_dim == 32


def test_compact_normalises_pixels_itself_so_uint8_and_float_agree():
    model = CompactNet().eval()
    images = pixels(4, 64)
    torch.testing.assert_close(model(images), model(images.float()))


def test_compact_embeddings_depend_on_the_image():
    model = CompactNet().eval()
    out = model(pixels(2, 64))
    assert (out[0] - out[1]).norm() > 1e-3


def test_compact_stays_small_enough_for_cpu_training():
    params = sum(p.numel() for p in CompactNet().parameters())
    assert 100_000 < params < 1_500_000


def test_compact_refuses_images_of_another_size_naming_both():
    with pytest.raises(InputError, match=r"64 x 64.*48"):
        CompactNet(input_size=64)(pixels(1, 48))


def test_compact_gradients_reach_the_first_layer():
    model = CompactNet(input_size=32)
    model(pixels(4, 32)).sum().backward()
    first = next(model.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.slow  # 21 M weights: seconds on a loaded machine
def test_inception_resnet_v1_at_facenet_input_size():
    model = create_encoder("inception-resnet-v1").eval()
    assert model.input_size == (160, 160)
    with torch.no_grad():
        features = model.features(pixels(2, 160).float())
        out = model(pixels(2, 160))
    assert features.shape == (2, 1792, 3, 3)
    assert out.shape == (2, 128)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    # Szegedy et al.'s stem, 5 A, 10 B and 5 C blocks: about 21 M weights with a 128-d head.
    params = sum(p.numel() for p in model.parameters())
    assert 19e6 < params < 25e6


def test_inception_resnet_v1_refuses_images_too_small_for_its_reductions():
    with pytest.raises(InputError, match="at least 75 x 75 pixels, not 40 x 40: give --size 75"):
        create_encoder("inception-resnet-v1", input_size=40)


def test_fingerprint_changes_with_the_weights():
    model = CompactNet(input_size=32)
    before = model.fingerprint()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert model.fingerprint() != before


@pytest.mark.parametrize("name", list_encoders())
def test_the_registry_knows_each_encoders_input_without_building_it(name):
    model = create_encoder(name)
    assert default_input(name) == (model.input_size[0], model.chip_padding)
    assert model.input_size[0] == model.input_size[1]


def test_a_checkpoint_input_is_only_known_once_read(tmp_path):
    assert default_input(tmp_path / "run" / "encoder.pt") is None
    (tmp_path / "compact").write_bytes(b"")  # a file, even named like an architecture
    assert default_input(tmp_path / "compact") is None


def test_the_base_class_is_reexported_lazily():
    import tripletface.models

    assert tripletface.models.Encoder is Encoder
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        tripletface.models.Nothing  # noqa: B018
