"""LPIPS (Zhang et al., 2018), v0.1 VGG16: the learned perceptual distance between two images.

``d(a, b) = sum_l mean_{x,y} sum_c w_lc (n(f_l(a)) - n(f_l(b)))_c^2``: ``f_l`` the VGG16
features relu1_2 .. relu5_3, ``n`` unit normalisation over channels, ``w_l`` the learned
non-negative channel weights. Nothing here is new code for the network: the VGG16 of
:mod:`diffcompose.models.vgg` (torchvision-compatible keys) and the heads torchmetrics ships as
data (:mod:`diffcompose.models.lpips`). torchmetrics' own LPIPS cannot run here (its backbone
is torchvision's). LPIPS scales inputs to [-1, 1] and shifts/scales them by
``(-.030, -.088, -.188) / (.458, .448, .450)``: the same affine map as ImageNet's mean/std on
[0, 1] inputs, which :class:`~diffcompose.models.vgg.VGG16Features` applies.

Sources (``vgg``): a local ``*.safetensors`` file or directory (optionally carrying its own
``lpips.safetensors``), or the hub id :data:`~diffcompose.models.vgg.DEFAULT_VGG`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def normalise(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit length over the channel axis (LPIPS's ``normalize_tensor``)."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def lpips_from_features(fa: list[torch.Tensor], fb: list[torch.Tensor], heads: list[torch.Tensor]) -> torch.Tensor:
    """``(N,)`` distances from per-layer features ``(N, C_l, H_l, W_l)`` and the heads ``(C_l,)``."""
    total = 0
    for a, b, w in zip(fa, fb, heads):
        d = (normalise(a) - normalise(b)).pow(2) * w.to(a).view(1, -1, 1, 1)
        total = total + d.sum(dim=1).mean(dim=(1, 2))
    return total  # type: ignore[return-value]


class LPIPS:
    """A loaded VGG16 + heads; :meth:`__call__` compares two uint8 RGB images of one size."""

    def __init__(self, vgg: torch.nn.Module, heads: list[torch.Tensor]) -> None:
        self.vgg, self.heads = vgg, heads
        self.device = next(vgg.parameters()).device

    @classmethod
    def load(cls, source: str | Path | None = None, device: torch.device | str = "cpu") -> "LPIPS":
        from diffcompose.models.loader import load_vgg
        from diffcompose.models.lpips import find_heads, load_heads
        from diffcompose.models.vgg import DEFAULT_VGG

        source = source or DEFAULT_VGG
        vgg = load_vgg(source, torch.device(device), torch.float32)
        local = Path(source) if Path(source).is_dir() else None
        return cls(vgg, load_heads(find_heads(local), vgg.widths))

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().to(self.device) / 255.0

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        if a.shape != b.shape:
            raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
        return float(lpips_from_features(self.vgg(self._tensor(a)), self.vgg(self._tensor(b)), self.heads)[0])
