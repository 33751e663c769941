"""LPIPS-style perceptual distance on VGG16 features, restricted by a mask.

``L_per(a, b) = sum_l mean_{x,y} mean_c (f_l(a * m) - f_l(b * m))^2`` with each feature
vector normalised to unit length over channels (as LPIPS does), at relu1_2 .. relu5_3,
images multiplied by the mask first (the paper's ``I * (1 - M)``). LPIPS's learned
per-channel weights are not used (uniform channel mean): they are a separate download
and the loss only needs to keep the region's structure.
"""

from __future__ import annotations

import torch


def _normalise(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class MaskedPerceptual:
    """Distance of images to a fixed reference inside a mask; the reference's features are computed once."""

    def __init__(self, vgg: torch.nn.Module, reference01: torch.Tensor, mask: torch.Tensor) -> None:
        self.vgg = vgg
        self.mask = mask.to(reference01.dtype)
        with torch.no_grad():
            self.ref = [_normalise(f) for f in vgg(reference01 * self.mask)]

    def __call__(self, image01: torch.Tensor) -> torch.Tensor:
        feats = self.vgg(image01.to(self.mask.dtype) * self.mask)
        return sum((_normalise(f) - r).pow(2).mean() for f, r in zip(feats, self.ref))  # type: ignore[return-value]
