"""The ObjectStitch engine: Paint-by-Example's sampler with ObjectStitch's adaptor, object and box.

What differs from :class:`~diffcompose.methods.pbe.engine.PaintByExampleEngine` is exactly
what the public ``scripts/inference.py`` does differently:

* the condition is every CLIP token of the object through the adaptor, and the unconditional
  branch the learned vector repeated over as many tokens (``prepare_input``);
* the object is black outside its mask and stretched bilinearly to 224 (:mod:`.preprocess`);
* the hole is the box (of the mask, when a mask is given), at latent size by nearest sampling;
* DDIM runs the public uniform timesteps (``make_ddim_timesteps``: every ``1000 // steps``-th
  step plus one), eta 0, guidance 5 against the unconditional vector.

Random draws, as the public script's: the initial noise, then the VAE posterior sample of the
masked background, then the scheduler's (eta > 0).
"""

from __future__ import annotations

import numpy as np

from diffcompose.errors import InputError
from diffcompose.inputs import mask_to_box
from diffcompose.methods.objectstitch.components import load_objectstitch, locate_objectstitch
from diffcompose.methods.objectstitch.options import InsertOptions
from diffcompose.methods.objectstitch.preprocess import LATENT_MASK, box_hole, prepare_object
from diffcompose.methods.pbe.engine import PaintByExampleEngine
from diffcompose.progress import RunContext


def public_ddim(config: dict, steps: int, device):
    """DDIM over the public sampler's timesteps: the same ``make_ddim_timesteps`` as AnyDoor's (whose
    public code is the same LDM sampler), so AnyDoor's function computes them."""
    from diffcompose.methods.anydoor.engine import public_ddim as ddim

    return ddim(config, steps, device, what="ObjectStitch")


class ObjectStitchEngine(PaintByExampleEngine):
    """Object compositing with view, pose and lighting changes (Song et al., CVPR 2023; bcmi's implementation)."""

    name = "objectstitch"

    def _load(self) -> None:
        self._resolve_device()
        self.c = load_objectstitch(self.model_dir(locate_objectstitch), self.device, self.dtype)

    def _reference_input(self, reference: np.ndarray, reference_mask: np.ndarray | None,
                         options: InsertOptions) -> np.ndarray:
        return prepare_object(reference, reference_mask, size=self.c.encoder.image_size)

    def _latent_mask(self, options: InsertOptions) -> str:
        return LATENT_MASK

    def _scheduler(self, options: InsertOptions):
        if options.scheduler == "ddim":
            return public_ddim(self.c.scheduler_config, options.steps, self.device)
        return super()._scheduler(options)

    def _insert(self, *, image: np.ndarray, mask: np.ndarray, reference: np.ndarray,
                reference_mask: np.ndarray | None, shape_mask: np.ndarray | None, options: InsertOptions,
                ctx: RunContext) -> list[np.ndarray]:
        """Fill the box of ``mask`` (the box itself with ``--box``) with the object."""
        if shape_mask is not None:
            raise InputError("objectstitch takes no --shape-mask: it fills the box and shapes the object itself")
        box = mask_to_box(mask)
        hole = box_hole(mask.shape, (box.x0, box.y0, box.x1, box.y1))
        return self._paint(image=image, mask=hole, reference=reference, reference_mask=reference_mask,
                           options=options, ctx=ctx, task="insert")
