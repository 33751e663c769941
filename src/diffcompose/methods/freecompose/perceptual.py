"""LPIPS on VGG16 features, restricted by a mask: the perceptual anchor of removal and harmonization.

``L(a, b) = sum_l mean_{x,y} sum_c w_lc (f_l(a m) - f_l(b m))^2`` with each feature vector
unit-normalised over channels and ``w_l`` LPIPS's learned channel weights
(:mod:`diffcompose.models.lpips`), at relu1_2 .. relu5_3; images are multiplied by the mask
first (the paper's ``I * (1 - M)``). The learned weights matter: a uniform channel mean is
7-52x weaker per layer and leaves the term numerically inert next to the DDS gradient.
Everything here runs in float32 (the caller decodes in float32 too), so the small gradients
it produces survive.
"""

from __future__ import annotations

import torch


def _normalise(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class MaskedPerceptual:
    """Distance of images to a fixed reference inside a mask; the reference's features are computed once."""

    def __init__(self, vgg: torch.nn.Module, heads: list[torch.Tensor], reference01: torch.Tensor,
                 mask: torch.Tensor) -> None:
        self.vgg = vgg
        self.mask = mask.float()
        self.heads = [h.to(self.mask.device).view(1, -1, 1, 1) for h in heads]
        with torch.no_grad():
            self.ref = [_normalise(f) for f in vgg(reference01.float() * self.mask)]

    def __call__(self, image01: torch.Tensor) -> torch.Tensor:
        feats = self.vgg(image01.float() * self.mask)
        return sum(((_normalise(f) - r).pow(2) * w).sum(dim=1).mean()  # type: ignore[return-value]
                   for f, r, w in zip(feats, self.ref, self.heads))
