"""The classical engines' part of ``diffcompose demo``: every method on real photos, no weights.

Photos: scikit-image's bundled ones (astronaut, coffee, chelsea; always there) and, when
present, the removal and harmonization cases of ../shared/testdata. Each output is a
:class:`~diffcompose.demo.Step`, planned before any work, so an existing output is refused
before anything runs; :mod:`diffcompose.demo` runs them and writes the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

import diffcompose.api as api
from diffcompose.demo import Step
from diffcompose.errors import InputError
from diffcompose.inputs import dilate_mask

ENGINE = "classical"

#: Boxes around the main object of scikit-image's photos (x0, y0, x1, y1).
SKIMAGE_BOXES = {"astronaut": (140, 10, 360, 330), "coffee": (150, 10, 430, 310), "chelsea": (90, 10, 360, 300)}
#: Where the demo pastes the cat into the coffee photo.
PASTE_BOX = (400, 180, 590, 390)


def skimage_steps() -> list[Step]:
    from skimage import data

    photos = {name: getattr(data, name)() for name in SKIMAGE_BOXES}
    masks: dict[str, np.ndarray] = {}

    def seg(name: str) -> Callable[[], object]:
        def run() -> object:
            out = api.segment(photos[name], SKIMAGE_BOXES[name], engine=ENGINE)
            masks[name] = np.asarray(out) > 0
            return out
        return run

    def rem(name: str, method: str) -> Callable[[], object]:
        # GrabCut masks hug the object: grow them a little so no outline is left behind.
        return lambda: api.remove(photos[name], dilate_mask(masks[name], 4), engine=ENGINE, method=method)

    def box_mask(name: str, box: tuple[int, int, int, int]) -> np.ndarray:
        m = np.zeros(photos[name].shape[:2], bool)
        m[box[1]:box[3], box[0]:box[2]] = True
        return m

    steps: list[Step] = []
    for name in SKIMAGE_BOXES:
        steps.append(Step(ENGINE, f"{name}_segment.png", seg(name), name, "segment", "grabcut",
                          {"input": photos[name], "mask": box_mask(name, SKIMAGE_BOXES[name])}))
        steps += [Step(ENGINE, f"{name}_remove_{m}.png", rem(name, m), name, "remove", m,
                       {"input": photos[name], "mask": lambda n=name: dilate_mask(masks[n], 4)})
                  for m in REMOVAL_METHODS]
    paste_region = box_mask("coffee", PASTE_BOX)
    for blend in ("none", "feather", "poisson"):
        steps.append(Step(ENGINE, f"coffee_paste_chelsea_{blend}.png",
                          lambda b=blend: api.paste(photos["coffee"], photos["chelsea"], PASTE_BOX,
                                                       object_mask=masks["chelsea"], engine=ENGINE, blend=b),
                          "coffee + chelsea", "paste", f"blend={blend}",
                          {"input": photos["coffee"], "mask": paste_region,
                           "reference": photos["chelsea"]}))
    for method in ("reinhard", "poisson"):
        steps.append(Step(ENGINE, f"coffee_harmonize_chelsea_{method}.png",
                          lambda m=method: api.harmonize(photos["coffee"], obj=photos["chelsea"], box=PASTE_BOX,
                                                            object_mask=masks["chelsea"], engine=ENGINE,
                                                            method=m),
                          "coffee + chelsea", "harmonize", method,
                          {"input": photos["coffee"], "mask": paste_region,
                           "reference": photos["chelsea"]}))
    return steps


#: Every classical removal method, side by side (exemplar fills first: the default is patchmatch).
REMOVAL_METHODS = ("patchmatch", "fsr-fast", "telea", "ns", "biharmonic")


def testdata_steps(testdata: Path) -> list[Step]:
    manifest = testdata / "manifest.json"
    if not manifest.exists():
        return []
    steps: list[Step] = []
    try:
        cases = json.loads(manifest.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{manifest} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(cases, list):
        raise InputError(f"{manifest} must be a JSON list of cases")
    for i, case in enumerate(cases):
        files = case.get("files") if isinstance(case, dict) else None
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise InputError(f"{manifest}: case {i} has no \"files\" mapping of names to paths")
        f = {k: testdata / v for k, v in files.items()}
        stem = f"testdata_{i:02d}_{Path(files.get('image', files.get('composite', 'x'))).stem}"
        needs = {"removal": ("image", "mask"), "harmonization": ("composite", "mask")}.get(case.get("task"), ())
        if any(k not in f for k in needs):
            raise InputError(f"{manifest}: case {i} ({case.get('task')}) needs files {', '.join(needs)}")
        if case.get("task") == "removal":  # the default exemplar fill next to the smooth one
            steps += [Step(ENGINE, f"{stem}_remove_{m}.png",
                           lambda f=f, m=m: api.remove(f["image"], f["mask"], engine=ENGINE, method=m),
                           stem, "remove", m, {"input": f["image"], "mask": f["mask"]})
                      for m in ("patchmatch", "telea")]
        elif case.get("task") == "harmonization":
            steps.append(Step(ENGINE, f"{stem}_harmonize_reinhard.png",
                              lambda f=f: api.harmonize(f["composite"], f["mask"], engine=ENGINE,
                                                           method="reinhard"),
                              stem, "harmonize", "reinhard", {"input": f["composite"], "mask": f["mask"]}))
    return steps


def demo_steps(testdata: Path) -> list[Step]:
    """Every output of this engine's demo: scikit-image's photos, then the cases in ``testdata``."""
    return skimage_steps() + testdata_steps(testdata)
