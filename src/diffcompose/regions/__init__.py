"""Where to work and how to put results back: windows around a region, placement, exact paste-back."""

from diffcompose.regions.crop import Window, WindowPolicy, plan_window, resize_image
from diffcompose.regions.pasteback import blend_weights, changed_region, default_margin, paste_back

__all__ = ["Window", "WindowPolicy", "plan_window", "resize_image", "blend_weights", "changed_region",
           "default_margin", "paste_back"]
