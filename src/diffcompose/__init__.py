"""diffcompose: object-level image composition and editing with diffusion priors.

The public API mirrors the CLI: every function accepts paths, PIL images or numpy arrays
and returns a PIL image (or a list of them) of the input's size.
"""

from diffcompose.api import compose, harmonize, paint, paste, remove, segment
from diffcompose.errors import DiffComposeError, InputError, WeightsMissingError

__version__ = "0.1.0"

__all__ = [
    "remove", "paste", "harmonize", "segment", "paint", "compose",
    "DiffComposeError", "InputError", "WeightsMissingError", "__version__",
]
