"""Speed of AnyDoor's pre- and post-processing (numpy/OpenCV, no model) on AnyDoor's own example.

    .venv/bin/python benchmarks/anydoor_preprocess.py [--testdata ../shared/testdata] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from diffcompose.inputs import load_image, load_mask
from diffcompose.methods import anydoor as A

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--testdata", type=Path, default=REPO.parent / "shared" / "testdata")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    t = args.testdata / "composition/AnyDoor/examples/TestDreamBooth"
    rgba = np.asarray(Image.open(t / "FG/01.png").convert("RGBA"))
    ref, ref_mask = np.ascontiguousarray(rgba[..., :3]), rgba[..., 3] > 128
    scene, mask = load_image(t / "BG/000000309203_GT.png"), load_mask(t / "BG/000000309203_mask.png")
    r = A.prepare_reference(ref, ref_mask, ratio=1.2)
    h = A.build_hint(scene, mask, r.hf_map, box_ratio=1.1, crop_ratio=2.0)
    print(f"reference {ref.shape[1]}x{ref.shape[0]}, scene {scene.shape[1]}x{scene.shape[0]}")
    for name, f in [("prepare_reference", lambda: A.prepare_reference(ref, ref_mask, ratio=1.2)),
                    ("build_hint", lambda: A.build_hint(scene, mask, r.hf_map, box_ratio=1.1, crop_ratio=2.0)),
                    ("paste_result", lambda: A.paste_result(h.scene, scene, h))]:
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            f()
        print(f"{name}: {(time.perf_counter() - t0) / args.repeats * 1000:.1f} ms")


if __name__ == "__main__":
    main()
