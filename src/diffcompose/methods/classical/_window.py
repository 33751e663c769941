"""Windows for the classical engines: native pixels around a region, capped in size.

The classical algorithms' cost grows with the pixels they see, not with the photo's size;
working on a window around the region keeps a 40 MP photo as fast as a small one. Past
``max_pixels`` the window is worked at a reduced resolution (only for algorithms whose
result is smooth anyway: biharmonic fills, GrabCut masks).
"""

from __future__ import annotations

import math

from diffcompose.inputs.boxes import Box
from diffcompose.regions import Window, plan_window


def window_for(image_shape: tuple[int, ...], region: Box, *, context: float = 0.5, min_context: int = 16,
               max_pixels: int | None = None) -> Window:
    """A native-resolution window around ``region``, downscaled only past ``max_pixels``."""
    size = (image_shape[1], image_shape[0])
    win = plan_window(size, region, context=context, min_context=min_context, resolution=None, multiple=1)
    if max_pixels is not None and win.box.width * win.box.height > max_pixels:
        s = math.sqrt(max_pixels / (win.box.width * win.box.height))
        win = Window(win.box, (max(1, round(win.box.width * s)), max(1, round(win.box.height * s))))
    return win
