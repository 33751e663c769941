"""AnyDoor: identity-preserving object insertion (Chen et al., CVPR 2024).

Light on purpose: importing this package (the registry does, for ``--help``) imports neither
torch nor OpenCV. The public pre- and post-processing (:mod:`.preprocess`, numpy and OpenCV)
is exported here and loaded on first use; the engine, models, conversion and training live in
their own modules.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public preprocessing names, all from :mod:`diffcompose.methods.anydoor.preprocess`.
__all__ = [
    "high_frequency_map", "prepare_reference", "build_hint", "paste_result", "draw_ratios",
    "mask_box", "expand_box", "square_box", "pad_square", "square_padding",
    "PreparedReference", "Hint", "Ratios", "RATIO_RANGES", "REFERENCE_SIZE", "HINT_SIZE",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("diffcompose.methods.anydoor.preprocess"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
