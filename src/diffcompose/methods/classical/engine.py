"""The classical engine object: no weights, nothing to load; native pixels around the region."""

from __future__ import annotations

from typing import Any

import numpy as np

from diffcompose.methods.classical import harmonize, paste, remove, segment
from diffcompose.methods.engine import Engine
from diffcompose.regions import WindowPolicy


class ClassicalEngine(Engine):
    """OpenCV, PyPatchMatch and scikit-image. Works at the source's own pixels (never resized by
    the runner); the window only bounds the work, so a 40 MP photo costs what a small one does."""

    name = "classical"

    def window_policy(self, task: str, options: Any) -> WindowPolicy:
        if task == "harmonize":  # colour statistics from a ring around the object (default 25% of its size)
            ring = options.ring if options.ring is not None else 0
            return WindowPolicy(context=0.3, min_context=ring + 8, square=True)
        if task == "remove":  # each part of the mask is filled from its own surroundings (0.5 of its size)
            return WindowPolicy(context=0.5, min_context=max(16, 2 * options.radius))
        if task == "segment":  # GrabCut's background samples around the box
            return WindowPolicy(context=0.25, min_context=16)
        return WindowPolicy(context=0.1, min_context=8)  # paste: the seam's surroundings

    def _remove(self, *, image: np.ndarray, mask: np.ndarray, options: Any, ctx: Any) -> np.ndarray:
        return remove.remove(image=image, mask=mask, options=options, ctx=ctx)

    def _paste(self, *, background: np.ndarray, object: np.ndarray, object_mask: np.ndarray, box: Any,  # noqa: A002
               options: Any, ctx: Any) -> np.ndarray:
        return paste.paste(background=background, object=object, object_mask=object_mask, box=box, options=options,
                           ctx=ctx)

    def _harmonize(self, *, image: np.ndarray, mask: np.ndarray, background: np.ndarray | None, options: Any,
                   ctx: Any) -> np.ndarray:
        return harmonize.harmonize(image=image, mask=mask, background=background, options=options, ctx=ctx)

    def _segment(self, *, image: np.ndarray, box: Any, options: Any, ctx: Any) -> np.ndarray:
        return segment.segment(image=image, box=box, options=options, ctx=ctx)
