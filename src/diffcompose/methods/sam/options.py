"""Options of the SAM engine, and its registration (light: no torch, no transformers).

``auto`` for ``segment`` keeps picking the classical engine (GrabCut): it needs no weights,
so ``auto`` works offline and on a base install, and the registry cannot know whether SAM's
weights are on this machine without looking for them. SAM is chosen by name
(``--engine sam``); the web page uses it for clicks when the server lists it as available
and falls back to a box for GrabCut when SAM's weights are missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffcompose.methods.options import check_range, option
from diffcompose.methods.registry import ContractFacts, EngineInfo, register

ENGINE = "sam"
#: The hub checkpoint ``--model`` means when not given (ViT-B: 94M parameters, 375 MB).
DEFAULT_SAM = "facebook/sam-vit-base"


@dataclass(frozen=True)
class SegmentOptions:
    multimask: Literal["auto", "on", "off"] = option(
        "auto", "predict SAM's three candidate masks and keep the one with the best predicted IoU (on), or one mask "
                "(off); auto: three for a single click (ambiguous: part or whole), one for a box or several points, "
                "as SAM's authors advise")
    threshold: float = option(0.0, "mask logit threshold: lower grows the mask, higher shrinks it")
    crop: bool = option(False, "show SAM a window around the prompts (with context) instead of the whole image: "
                               "finer masks for small objects in very large photos")
    context: float = option(1.0, "with crop: context around the prompts' box, as a share of its size")

    def __post_init__(self) -> None:
        check_range("threshold", self.threshold, -20.0, 20.0)
        check_range("context", self.context, 0.0, 10.0)


register(EngineInfo(
    ENGINE, "diffcompose.methods.sam.engine:SamEngine",
    tasks={"segment": SegmentOptions},
    priority=-10,  # below GrabCut: auto must work without weights (see the module docstring)
    requires=("torch", "transformers", "safetensors"), extra="diffusion", default_model=DEFAULT_SAM,
    summary="Segment Anything: an object mask from clicks (points) and/or a box",
    tiny="diffcompose.methods.sam.tiny:ensure_tiny_sam",
    model_classes=("SamModel",),
    # No random choice (the seed cannot change the mask); two progress steps: encode, decode.
    contract=ContractFacts(bad_options={"segment": {"threshold": 50.0}}, seeded=False, steps=2),
))
