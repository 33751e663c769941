"""Speed of the ``sam`` engine on this machine: one ``segment`` request, then a second on the same image.

No SAM checkpoint can be downloaded here, so by default the ViT-B architecture
(``SamConfig()``, 93.7M parameters) is built with random weights: compute does not depend on
weight values. The first request pays the image encoder; the second (other clicks, same
image) reuses the engine's cached embedding and runs only the prompt encoder and decoder.

    .venv/bin/python benchmarks/sam_speed.py                    # random ViT-B, CPU
    .venv/bin/python benchmarks/sam_speed.py --model DIR        # a real SAM checkpoint folder
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="SAM folder or hub id (default: random ViT-B written to a temp folder)")
    p.add_argument("--device", default=None)
    p.add_argument("--size", default="1024x768", help="image WxH")
    args = p.parse_args()

    import torch

    import diffcompose as dc

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from transformers import SamConfig, SamModel

            t = time.perf_counter()
            sam = SamModel(SamConfig()).eval()
            model = str(Path(tmp) / "sam-vit-b-random")
            sam.save_pretrained(model)
            n = sum(q.numel() for q in sam.parameters()) / 1e6
            print(f"random ViT-B SAM: {n:.1f}M parameters, built and saved in {time.perf_counter() - t:.1f} s")
            del sam
        w, h = (int(v) for v in args.size.split("x"))
        image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
        engine = dc.get_engine("sam", model=model, device=args.device)
        engine.load()
        box = (w * 3 // 10, h // 4, w * 7 // 10, h * 3 // 4)
        for points in ([[w // 2, h // 2, 1]], [[w // 2, h // 2, 1], [w // 10, h // 10, 0]]):
            t = time.perf_counter()
            engine.segment(image, box, points=points)
            print(f"segment {w}x{h} (box + {len(points)} click(s)): {time.perf_counter() - t:.2f} s "
                  f"({'embedding reused' if len(points) > 1 else 'image encoder run'})")


if __name__ == "__main__":
    main()
