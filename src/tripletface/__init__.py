"""tripletface: face recognition in the FaceNet style.

The five things most users need::

    from tripletface import FaceRecognizer, load_encoder, triplet_loss, PKSampler
"""

import importlib

__version__ = "0.1.0"

# Public name -> module; imported on first access so that `import tripletface` does not load torch.
_LAZY = {
    "triplet_loss": "tripletface.losses",
    "batch_triplet_loss": "tripletface.losses",
    "mine_triplets": "tripletface.mining",
    "PKSampler": "tripletface.sampling",
    "load_encoder": "tripletface.models",
    "create_encoder": "tripletface.models",
    "list_encoders": "tripletface.models",
    "FaceRecognizer": "tripletface.recognize",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tripletface' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", *_LAZY]
