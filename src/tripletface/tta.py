"""Test-time augmentation: a face's embedding averaged with its mirror image's.

A face and its horizontal mirror are the same person; the encoder's two answers differ by its
noise, so their mean (renormalised to unit length) is a steadier embedding, at twice the encoder
cost (bench/tta.py measures both).
"""

import numpy as np


def with_mirrors(chips: np.ndarray) -> np.ndarray:
    """2N x H x W x C chips: the N given, then their horizontal mirrors in the same order."""
    chips = np.asarray(chips)
    return np.concatenate([chips, chips[:, :, ::-1]])


def mirror_average(embeddings: np.ndarray) -> np.ndarray:
    """N x D unit-length means of the rows of a 2N x D array and the rows N below them (the
    embeddings of ``with_mirrors`` chips)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if len(embeddings) % 2:
        raise ValueError(f"{len(embeddings)} rows: expected a face and its mirror for each")
    half = len(embeddings) // 2
    mean = embeddings[:half] + embeddings[half:]
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    return mean / np.maximum(norms, np.finfo(np.float32).tiny)
