"""Where dlib's model files from the ``face-recognition-models`` package lie on disk."""

import importlib.util
from pathlib import Path

from tripletface.errors import InputError

FACE_ENCODER = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_5 = "shape_predictor_5_face_landmarks.dat"
CNN_DETECTOR = "mmod_human_face_detector.dat"


def dlib_model_path(filename: str) -> Path:
    """Path of one of dlib's model files; found without importing the package.

    Importing ``face_recognition_models`` needs ``pkg_resources``, which setuptools >= 81 dropped,
    so the package's data directory is located through its import spec instead.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "dlib's model files are missing: pip install face-recognition-models "
            "(it ships the pretrained encoder, landmark predictor and detectors)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / filename
        if path.is_file():
            return path
    raise InputError(
        f"{filename} is not in the face-recognition-models package: reinstall it with "
        "pip install --force-reinstall face-recognition-models"
    )
