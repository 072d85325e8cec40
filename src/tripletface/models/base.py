"""The contract every encoder keeps, whatever its architecture."""

import hashlib

import torch
from torch import nn


class Encoder(nn.Module):
    """Maps N x 3 x H x W RGB pixels (values 0-255, uint8 or float) to N x D embeddings."""

    #: Length of one embedding.
    embedding_dim: int = 128
    #: (height, width) of the images the encoder expects.
    input_size: tuple[int, int] = (64, 64)
    #: Padding around the five landmarks of the aligned face chips the encoder takes (dlib's
    #: convention); None: it takes whole images resized, e.g. synthetic faces that fill the frame.
    chip_padding: float | None = None
    #: True when forward() returns unit-length rows (FaceNet's ||f(x)|| = 1).
    normalized: bool = True

    def fingerprint(self) -> str:
        """Short hex digest of the weights: galleries use it to refuse another encoder's queries."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Embeddings of N x 3 x H x W images in eval mode, in batches; returns N x D float32."""
        was_training = self.training
        self.eval()
        try:
            parts = [self(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        finally:
            self.train(was_training)
        if not parts:
            return torch.empty(0, self.embedding_dim)
        return torch.cat(parts).float()
