"""The SAM engine: image encoder once per request, then the prompt encoder and mask decoder.

Prompts: a box (in the runner's window, like every box) and/or points. The runner crops
images, masks and boxes but not points, so ``prepare_segment`` sends the points in image
coordinates together with the prompts' bounding box twice: as it is (``points.frame``) and
cut to the window by the runner (``points_frame``); the two give the map from image to
window coordinates (a translation at the native pixels SAM's window keeps).

The image embedding (the expensive part: the ViT encoder) of the last few windows is kept,
keyed by their pixels, so more clicks on the same photo only run the light prompt encoder and
mask decoder, as SAM was designed to be used interactively.

SAM makes no random choice: the seed does not change the mask.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffcompose.errors import WeightsMissingError
from diffcompose.inputs.boxes import Box
from diffcompose.methods.diffusion import DiffusionEngine
from diffcompose.methods.sam.options import SegmentOptions
from diffcompose.methods.sam.preprocess import Geometry, Preprocessor, logits_to_mask
from diffcompose.models.hub import resolve_model
from diffcompose.models.loader import load_component
from diffcompose.progress import RunContext
from diffcompose.regions import WindowPolicy

log = logging.getLogger(__name__)

WAYS_OUT = "; pass --model DIR (a local SAM directory: config.json and model.safetensors), " \
           "or use --engine classical (GrabCut, with a box)"
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_PATTERNS = ["config.json", "preprocessor_config.json", "model.safetensors"]
#: Image embeddings kept (about 4 MB each for the published models).
EMBEDDING_CACHE = 4


def locate_sam(name: str) -> Path:
    """A complete local SAM directory for ``name`` (a hub id or a directory)."""
    root = resolve_model(name, ["config.json"], what="SAM model", allow_patterns=_PATTERNS, hint=WAYS_OUT)
    if not any((root / f).is_file() for f in _WEIGHTS):
        raise WeightsMissingError(f"SAM model directory {root} is incomplete: missing {_WEIGHTS[0]}{WAYS_OUT}")
    return root


class SamEngine(DiffusionEngine):
    """Promptable segmentation with ``transformers``' ``SamModel``."""

    name = "sam"

    def _load(self) -> None:
        from transformers import SamModel

        self._resolve_device()
        root = self.model_dir(locate_sam)
        self.sam = load_component(root, "sam", self.device, self.dtype, cls=SamModel, subfolder=".")
        self.prep = Preprocessor.from_dir(root, int(self.sam.config.vision_config.image_size))
        self.embeddings: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    def modules(self) -> list[torch.nn.Module]:
        return [self.sam]

    def window_policy(self, task: str, options: SegmentOptions) -> WindowPolicy:
        # Native pixels: SAM resizes to its own input size itself (longest side 1024).
        return WindowPolicy(None, context=options.context, min_context=16, whole_image=not options.crop)

    @torch.no_grad()
    def _segment(self, *, image: np.ndarray, box: Box | None, options: SegmentOptions, ctx: RunContext,
                 points: Any = None, points_frame: Box | None = None) -> np.ndarray:
        progress = ctx.progress("segment", 2)
        dev, dt = self.device, self.dtype
        geo = Geometry.of((image.shape[1], image.shape[0]), self.prep.square)
        embeddings = self._embed(image)
        progress.step()

        kw: dict[str, Any] = {}
        n_points = 0
        if points is not None:
            xy = window_points(points.xyl[:, :2], points.frame, points_frame)
            kw["input_points"] = torch.from_numpy(geo.points(xy)).to(dev, dt)[None, None]
            kw["input_labels"] = torch.from_numpy(points.xyl[:, 2].astype(np.int64)).to(dev)[None, None]
            n_points = len(xy)
        if box is not None:
            kw["input_boxes"] = torch.from_numpy(geo.box(box)).to(dev, dt)[None, None]
        multi = {"on": True, "off": False}.get(options.multimask, box is None and n_points == 1)
        out = self.sam(image_embeddings=embeddings, multimask_output=multi, **kw)
        logits = out.pred_masks[0, 0].float()  # (candidates, h', w')
        best = int(out.iou_scores[0, 0].float().argmax()) if multi else 0
        mask = logits_to_mask(logits[best].cpu().numpy(), geo, options.threshold)
        if box is not None:  # the user said the object is inside the box
            inside = np.zeros_like(mask)
            inside[box.slices] = True
            mask &= inside
        if not mask.any():
            log.warning("segment: SAM found no object for these prompts")
        progress.step()
        return mask

    def _embed(self, image: np.ndarray) -> torch.Tensor:
        """The image encoder's output for this window, from the cache when the same pixels were seen
        (then nothing is resized or normalised either)."""
        key = hashlib.blake2b(image.tobytes(), digest_size=16, key=repr(image.shape).encode()).digest()
        if key in self.embeddings:
            self.embeddings.move_to_end(key)
            return self.embeddings[key]
        pixels, _ = self.prep.pixels(image)
        emb = self.sam.get_image_embeddings(torch.from_numpy(pixels)[None].to(self.device, self.dtype))
        self.embeddings[key] = emb
        while len(self.embeddings) > EMBEDDING_CACHE:
            self.embeddings.popitem(last=False)
        return emb


def window_points(xy: np.ndarray, frame: Box, frame_in_window: Box) -> np.ndarray:
    """Points from image coordinates to the window's (``frame`` is the same box in both)."""
    sx = frame_in_window.width / frame.width
    sy = frame_in_window.height / frame.height
    return np.stack([(xy[:, 0] - frame.x0) * sx + frame_in_window.x0,
                     (xy[:, 1] - frame.y0) * sy + frame_in_window.y0], axis=1)
