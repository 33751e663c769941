"""Options of the classical engine, and its registration (light: no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffcompose.methods.options import check_range, option
from diffcompose.methods.registry import ContractFacts, EngineInfo, register

ENGINE = "classical"


@dataclass(frozen=True)
class RemoveOptions:
    method: Literal["telea", "ns", "biharmonic", "patchmatch", "fsr-fast"] = option(
        "patchmatch", "inpainting algorithm: smooth fills (telea: OpenCV fast marching, ns: OpenCV Navier-Stokes, "
                      "biharmonic: scikit-image) or fills that rebuild texture from the surroundings (patchmatch: "
                      "PatchMatch, seeded; fsr-fast: OpenCV frequency-selective reconstruction)")
    radius: int = option(5, "neighbourhood radius in pixels for telea/ns")
    patch: int = option(3, "patch radius in pixels for patchmatch (patches of 2r+1 pixels a side; larger follows "
                           "larger structures, slower)")

    def __post_init__(self) -> None:
        check_range("radius", self.radius, 1, 100)
        check_range("patch", self.patch, 1, 15)


@dataclass(frozen=True)
class PasteOptions:
    blend: Literal["none", "feather", "poisson"] = option(
        "feather", "seam: hard cut, feathered alpha, or Poisson (gradient-domain) blending")
    feather: int | None = option(None, "feather width in pixels (default: 3% of the object's short side)")

    def __post_init__(self) -> None:
        if self.feather is not None:
            check_range("feather", self.feather, 0, 1000)


@dataclass(frozen=True)
class HarmonizeOptions:
    method: Literal["reinhard", "poisson"] = option(
        "reinhard", "Reinhard Lab colour transfer from the surroundings, or Poisson blending into them")
    strength: float | None = option(
        None, "how far the object moves toward its surroundings, 0..1 (default: 0.3 for reinhard, since an object "
              "rarely shares its surroundings' colours; 1 for poisson)")
    ring: int | None = option(None, "width in pixels of the surrounding band the statistics come from "
                                    "(default: 25% of the object's size)")

    def __post_init__(self) -> None:
        if self.strength is not None:
            check_range("strength", self.strength, 0.0, 1.0)
        if self.ring is not None:
            check_range("ring", self.ring, 1, 10000)


@dataclass(frozen=True)
class SegmentOptions:
    iterations: int = option(5, "GrabCut iterations")

    def __post_init__(self) -> None:
        check_range("iterations", self.iterations, 1, 50)


@dataclass(frozen=True)
class InsertOptions:
    """``insert`` without weights: the reference object pasted into the region, then harmonized."""

    blend: Literal["none", "feather", "poisson"] = option(
        "feather", "seam of the pasted object: hard cut, feathered alpha, or Poisson (gradient-domain) blending")
    feather: int | None = option(None, "feather width in pixels (default: 3% of the object's short side)")
    harmonize: Literal["reinhard", "poisson", "none"] = option(
        "reinhard", "then match the object to its surroundings: Reinhard Lab colour transfer, Poisson, or not at all")
    strength: float | None = option(None, "harmonization strength, 0..1 (default: 0.3 for reinhard, 1 for poisson)")
    ring: int | None = option(None, "width in pixels of the surrounding band harmonization reads "
                                    "(default: 25% of the object's size)")

    def __post_init__(self) -> None:
        if self.feather is not None:
            check_range("feather", self.feather, 0, 1000)
        if self.strength is not None:
            check_range("strength", self.strength, 0.0, 1.0)
        if self.ring is not None:
            check_range("ring", self.ring, 1, 10000)


register(EngineInfo(
    ENGINE, "diffcompose.methods.classical.engine:ClassicalEngine",
    tasks={"remove": RemoveOptions, "paste": PasteOptions, "harmonize": HarmonizeOptions, "segment": SegmentOptions,
           "insert": InsertOptions},
    priority=0, summary="OpenCV/scikit-image, no weights",
    demo="diffcompose.methods.classical.demo:demo_steps",
    contract=ContractFacts(
        bad_options={"remove": {"radius": 0}, "paste": {"feather": -1}, "harmonize": {"strength": 2.0},
                     "segment": {"iterations": 0}, "insert": {"strength": 2.0}},
        reports_progress=("remove",),  # one step per separate part of the mask
    ),
))
