"""Where to work and how to put results back: windows around a region, exact paste-back."""

from diffcompose.regions.crop import Window, plan_window, resize_image
from diffcompose.regions.pasteback import blend_weights, changed_region, default_margin, paste_back

__all__ = ["Window", "plan_window", "resize_image", "blend_weights", "changed_region", "default_margin", "paste_back"]
