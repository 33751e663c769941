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
        # harmonize, and insert (a paste, then harmonize): colour statistics from a ring around the
        # object (default 25% of its size)
        if task in ("harmonize", "insert"):
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

    def _segment(self, *, image: np.ndarray, box: Any, options: Any, ctx: Any, points: Any = None,
                 points_frame: Any = None) -> np.ndarray:
        """GrabCut starts from the box; clicks (``points``) are for SAM and are ignored here."""
        if box is None:
            from diffcompose.errors import InputError, engine_named
            from diffcompose.methods.tasks import get_task

            raise InputError(f"the classical engine (GrabCut) needs {get_task('segment').param('box').named}; points "
                             f"alone need {engine_named('sam')}")
        return segment.segment(image=image, box=box, options=options, ctx=ctx)

    def _insert(self, *, image: np.ndarray, mask: np.ndarray, reference: np.ndarray,
                reference_mask: np.ndarray | None, shape_mask: np.ndarray | None, options: Any, ctx: Any) -> np.ndarray:
        """The reference object fitted into the region's box (the shape mask's, when given) by the
        ``paste`` rule, cut to the region (white = what may change), then ``harmonize``d against
        the clean scene. Reuses the paste and harmonize functions: no logic of its own."""
        from diffcompose.errors import InputError
        from diffcompose.inputs.boxes import mask_to_box
        from diffcompose.methods.classical.options import HarmonizeOptions, PasteOptions
        from diffcompose.regions.place import place

        region = mask if shape_mask is None else shape_mask
        obj_mask = reference_mask if reference_mask is not None else np.ones(reference.shape[:2], dtype=bool)
        box = mask_to_box(region)
        pasted = paste.paste(background=image, object=reference, object_mask=obj_mask, box=box,
                             options=PasteOptions(options.blend, options.feather), ctx=ctx)
        pasted = np.where(region[..., None], pasted, image)
        placed = place(image, reference, obj_mask, box)[1] & region
        if not placed.any():
            raise InputError(f"the reference object fitted into {box} covers no pixels of the region")
        if options.harmonize == "none":
            return pasted
        how = HarmonizeOptions(options.harmonize, options.strength, options.ring)
        return harmonize.harmonize(image=pasted, mask=placed, background=image, options=how, ctx=ctx)
