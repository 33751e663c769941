"""The training sketch: the edges of the training image, binarised, as the public pipeline makes it.

The public pipeline (``preprocess_dataset/run_preprocess.sh``) runs the **PiDiNet** edge detector
(``pidinet_converted``, config ``carv4``, with ``--sa --dil``, weights ``table5_pidinet.pth``) over
every training image offline, then ``binarize_sketch.py`` **binarises** its grey edge map at **153**
(0.6 of 255, "following DeepFill v2"): a pixel above 153 becomes a stroke (255), the rest 0. No
dilation. The dataset reads that file with the image, crops and resizes it with the image, and the
model keeps it only inside the hole.

Here the edge map comes from one of two places (:func:`training_sketch`):

* ``sketch_dir``: edge maps made beforehand, one per image, named ``<image stem>.png`` (the public
  layout: PiDiNet's output, or its ``sketch_bin``), binarised here at the same threshold (a
  binarised map stays as it is);
* otherwise OpenCV's **Canny** detector on the image's grey levels (thresholds ``canny_low``,
  ``canny_high``) stands in for PiDiNet, whose weights we do not ship. Canny's map is already
  0/255, so the binarisation leaves it as it is; ``dilate`` thickens its 1-px lines if wanted
  (PiDiNet's lines are a few pixels wide; default 0, the public pipeline's).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from diffcompose.errors import InputError

#: ``binarize_sketch.py``'s threshold: an edge value above it is a stroke.
THRESHOLD = 153


def binarize(edges: np.ndarray, threshold: int = THRESHOLD) -> np.ndarray:
    """float32 0/1 strokes of a uint8 edge map (white = edge): above ``threshold`` -> 1."""
    return (edges > threshold).astype(np.float32)


def canny_edges(image: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """uint8 0/255 Canny edges of an RGB image's grey levels."""
    return cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), low, high)


def thicken(strokes: np.ndarray, pixels: int) -> np.ndarray:
    """Strokes grown by ``pixels`` on every side (a square structuring element); 0: as they are."""
    if pixels <= 0:
        return strokes
    return cv2.dilate(strokes, np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8))


def read_edge_map(sketch_dir: Path, image_path: Path, size: tuple[int, int]) -> np.ndarray:
    """The edge map made beforehand for ``image_path`` (grey levels, uint8), of the image's ``size``."""
    from PIL import Image

    path = Path(sketch_dir) / (Path(image_path).stem + ".png")
    try:
        with Image.open(path) as im:
            edges = np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise InputError(f"no edge map for {image_path} in {sketch_dir} (expected {path.name})") from None
    except OSError:
        raise InputError(f"cannot read edge map {path}") from None
    if edges.shape != (size[1], size[0]):
        raise InputError(f"edge map {path} is {edges.shape[1]}x{edges.shape[0]}, its image {size[0]}x{size[1]}")
    return edges


def training_sketch(image: np.ndarray, image_path: Path, *, sketch_dir: str | None = None, threshold: int = THRESHOLD,
                    canny_low: int = 100, canny_high: int = 200, dilate: int = 0) -> np.ndarray:
    """float32 0/1 strokes (H, W) of a training image (see the module docstring)."""
    size = (image.shape[1], image.shape[0])
    edges = read_edge_map(Path(sketch_dir), image_path, size) if sketch_dir else \
        canny_edges(image, canny_low, canny_high)
    return thicken(binarize(edges, threshold), dilate)
