"""diffcompose: object-level image composition and editing with diffusion priors.

The functional API mirrors the CLI: every function accepts paths, PIL images or numpy
arrays and returns a PIL image (or a list of them) of the input's size. Engine objects
(:func:`get_engine`, :class:`EngineManager`) keep models loaded between calls; progress
events (:class:`ProgressEvent`) and cancellation (:class:`CancelToken`) work the same for
every engine.
"""

from diffcompose.api import compose, get_engine, harmonize, inpaint, insert, outpaint, paint, paste, remove, segment
from diffcompose.errors import Cancelled, DiffComposeError, InputError, WeightsMissingError
from diffcompose.methods.engine import Engine
from diffcompose.methods.manager import EngineManager, default_manager
from diffcompose.progress import CancelToken, ProgressEvent

__version__ = "0.1.0"

__all__ = [
    "remove", "paste", "harmonize", "segment", "paint", "compose", "inpaint", "insert", "outpaint", "get_engine",
    "Engine", "EngineManager", "default_manager", "CancelToken", "ProgressEvent",
    "Cancelled", "DiffComposeError", "InputError", "WeightsMissingError", "__version__",
]
