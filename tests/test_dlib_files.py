"""Locating dlib's model files from the face-recognition-models package."""

import pytest

from tripletface.errors import InputError
from tripletface.models.dlib_files import CNN_DETECTOR, FACE_ENCODER, LANDMARKS_5, dlib_model_path


@pytest.mark.parametrize("name", [FACE_ENCODER, LANDMARKS_5, CNN_DETECTOR])
def test_every_model_file_is_found(name):
    path = dlib_model_path(name)
    assert path.name == name
    assert path.stat().st_size > 100_000


def test_unknown_file_is_a_clear_error():
    with pytest.raises(InputError, match=r"no_such_model\.dat"):
        dlib_model_path("no_such_model.dat")
