"""Reading and validating what users hand us: images, masks, boxes.

Everything at the edges (paths, PIL images, numpy arrays) becomes one internal form:
images are ``uint8`` arrays of shape ``(H, W, 3)`` in RGB; masks are ``bool`` arrays of
shape ``(H, W)`` with ``True`` = the region to change; boxes are :class:`Box`.
"""

from diffcompose.inputs.boxes import Box, parse_box, mask_to_box
from diffcompose.inputs.images import DEFAULT_MAX_PIXELS, ImageLike, load_image, to_pil
from diffcompose.inputs.masks import MaskLike, load_mask, resize_mask, dilate_mask, check_mask_coverage

__all__ = [
    "Box", "parse_box", "mask_to_box",
    "DEFAULT_MAX_PIXELS", "ImageLike", "load_image", "to_pil",
    "MaskLike", "load_mask", "resize_mask", "dilate_mask", "check_mask_coverage",
]
