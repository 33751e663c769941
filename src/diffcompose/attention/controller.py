"""What the attention edit does, on which layers, and when: one object per run, no globals."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

Mode = Literal["mask", "inject"]


@dataclass
class AttentionEdit:
    """Configuration and gating state of a self-attention edit.

    ``latent_size`` is the ``(height, width)`` of the UNet input; token grids of deeper
    levels are derived from it (each level halves it, rounding up), so any grid shape
    works. ``mask`` (for ``mode="mask"``) is a float map in 0..1 of any resolution (the
    working-size pixel mask), 1 = the region whose keys/values the target rows must not see;
    each token grid samples it bilinearly at its cells' centres (half-pixel centres, no
    antialiasing) and excludes the tokens whose value exceeds ``mask_threshold``, as the
    public editor does, so a stripe thinner than a token still excludes the tokens whose
    centre it covers. ``src_rows``/``tgt_rows``
    index the batch (default: the DDS layout ``[u_src, u_tgt, c_src, c_tgt]``).

    Gates: a layer is edited when its execution index (0..15 for SD1.x/2.x) lies in
    ``[min_layer, max_layer]``; an iteration when ``iteration >= start_iter`` and the
    timestep lies in ``[t_min, t_max]``. :meth:`update` sets the iteration's gate.
    """

    mode: Mode
    latent_size: tuple[int, int]
    mask: torch.Tensor | None = None
    min_layer: int = 10
    max_layer: int = 10**6
    start_iter: int = 0
    t_min: int = 0
    t_max: int = 10**6
    mask_threshold: float = 0.1
    src_rows: tuple[int, ...] = (0, 2)
    tgt_rows: tuple[int, ...] = (1, 3)
    active: bool = True
    _grid_cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ("mask", "inject"):
            raise ValueError(f"unknown attention edit mode {self.mode!r}")
        if self.mode == "mask" and self.mask is None:
            raise ValueError("mode='mask' needs a mask")
        if len(self.src_rows) != len(self.tgt_rows):
            raise ValueError("src_rows and tgt_rows must pair up")

    def update(self, iteration: int, timestep: int | float) -> bool:
        """Open or close the gate for this iteration; returns whether edits apply."""
        self.active = iteration >= self.start_iter and self.t_min <= float(timestep) <= self.t_max
        return self.active

    def applies_to(self, layer: int) -> bool:
        return self.active and self.min_layer <= layer <= self.max_layer

    def grid(self, tokens: int) -> tuple[int, int]:
        """The ``(h, w)`` token grid with ``tokens`` tokens at some level below the latent."""
        h, w = self.latent_size
        while h * w > tokens and (h > 1 or w > 1):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        if h * w != tokens:
            raise ValueError(f"{tokens} tokens match no level of a {self.latent_size} latent")
        return h, w

    def keep_index(self, tokens: int, device: torch.device) -> torch.Tensor | None:
        """Indices of the background tokens of a grid (``None``: none is background, or all are)."""
        key = (tokens, str(device))
        if key not in self._grid_cache:
            h, w = self.grid(tokens)
            assert self.mask is not None
            m = self.mask.to(device=device, dtype=torch.float32)[None, None]
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            keep = (m <= self.mask_threshold).flatten().nonzero().flatten()
            self._grid_cache[key] = None if keep.numel() in (0, tokens) else keep
        return self._grid_cache[key]

    def excluded(self, tokens: int) -> torch.Tensor:
        """Boolean ``(tokens,)``: True where keys/values are excluded (for tests and previews)."""
        keep = self.keep_index(tokens, torch.device("cpu"))
        out = torch.zeros(tokens, dtype=torch.bool)
        if keep is not None:
            out[:] = True
            out[keep] = False
        return out
