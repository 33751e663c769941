"""Exemplar-based fills: PatchMatch (PyPatchMatch) and frequency-selective reconstruction (OpenCV xphoto).

Both synthesise the hole from the image's own texture instead of diffusing the border's
colours inward, so a hole over grass, brick or foliage comes back textured, not smeared.

* :func:`patchmatch_fill`: PyPatchMatch's native PatchMatch inpainting (Barnes et al. 2009:
  randomised nearest-neighbour fields found coarse to fine over an image pyramid, the hole
  rebuilt by letting the matched patches vote). Its random search takes one global seed in
  the native library, so each call sets the seed and runs under one lock: the same seed gives
  the same fill, even with other requests running in other threads.
  The copied patches keep their own brightness, so the fill is then made continuous with
  the border (:func:`seam_correct`), which lowers the error over the hole without touching
  the texture inside it.
* :func:`fsr_fill`: OpenCV contrib's frequency-selective reconstruction (Seiler, Jonscher et
  al.): each block of the hole is modelled as a sparse sum of Fourier basis functions fitted
  to the known pixels around it. ``fast`` and ``best`` are its two quality settings; only
  ``fast`` is a removal method, since ``best`` takes about 8 s for a 128x128 window with a
  15% hole (33 s at 256x256) on this project's CPU.

The heavy packages are imported on first use, so importing the engine stays light.
"""

from __future__ import annotations

import threading

import numpy as np

from diffcompose.errors import MissingExtraError

#: PyPatchMatch keeps its seed in process-wide native state: seed and fill run as one step.
_PATCHMATCH_LOCK = threading.Lock()


def _patchmatch_module():  # noqa: ANN202 - a module
    try:
        import patchmatch
    except ImportError as exc:  # pragma: no cover - a base dependency (Python >= 3.11)
        raise MissingExtraError("method patchmatch needs the PyPatchMatch package (pip install pypatchmatch; "
                                "Python 3.11 or newer)") from exc
    if not patchmatch.patchmatch_available:  # pragma: no cover - no wheel for this platform and no compiler
        raise MissingExtraError("method patchmatch: PyPatchMatch is installed but its native library could not be "
                                "loaded (reinstall it: pip install --force-reinstall --no-deps --no-cache-dir "
                                "pypatchmatch)")
    return patchmatch


def patchmatch_fill(image: np.ndarray, hole: np.ndarray, *, patch: int, seed: int, seam: bool = True) -> np.ndarray:
    """The image with ``hole`` (bool) rebuilt by PatchMatch from the pixels outside it.

    ``patch``: patch radius (patches of ``2 * patch + 1`` pixels a side); ``seed``: any int,
    taken modulo 2**32; ``seam``: make the fill continuous with the border
    (:func:`seam_correct`). Pixels outside the hole come back unchanged.
    """
    pm = _patchmatch_module()
    image = np.ascontiguousarray(image, dtype=np.uint8)
    hole8 = np.ascontiguousarray(hole, dtype=np.uint8)
    with _PATCHMATCH_LOCK:
        pm.set_random_seed(int(seed) % 2**32)
        filled = pm.inpaint(image, hole8, patch_size=int(patch))
    return seam_correct(filled, hole) if seam else filled


#: Past this many hole pixels the seam's offset is solved on a coarser grid (the offset is
#: smooth inside; one solve costs about 0.1 s at 25k pixels and 1 s at 150k).
SEAM_MAX_UNKNOWNS = 120_000


def seam_correct(filled: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``filled`` with a smooth (harmonic) offset added inside ``hole`` that closes the seam.

    Across each edge between a hole pixel ``p`` and a known pixel ``q`` the fill jumps by
    ``filled[q] - filled[p]``; the offset is the membrane that takes exactly these jumps on
    the border and is harmonic (zero Laplacian) inside, so the corrected fill meets its
    surroundings without a step while its gradients inside (the copied texture) stay, bent
    only by a smooth field: seamless cloning (Perez et al. 2003) with the fill's own gradients
    as guidance. One sparse solve over the hole's pixels; past :data:`SEAM_MAX_UNKNOWNS` on a
    grid coarsened to that size, the offset then interpolated back. A hole that covers the
    whole image (nothing to meet) comes back unchanged.
    """
    hole = np.asarray(hole, dtype=bool)
    h, w = hole.shape
    n = int(hole.sum())
    if n == 0 or n == h * w:  # nothing to correct, or nothing to meet (every other 4-connected part has a border)
        return np.array(filled, copy=True)
    f = np.asarray(filled, dtype=np.float32)
    if f.ndim == 2:
        f = f[..., None]
    if n <= SEAM_MAX_UNKNOWNS:
        offset = _membrane(f, hole)
    else:
        import cv2

        k = float(np.sqrt(n / SEAM_MAX_UNKNOWNS))
        size = (max(1, int(w / k)), max(1, int(h / k)))

        def shrink(x: np.ndarray) -> np.ndarray:
            return cv2.resize(x, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)

        # A coarse pixel is hole if any of its pixels is; each side's value averages its own pixels only.
        cover = shrink(hole.astype(np.float32))[..., 0]
        small_hole = cover > 0
        if small_hole.all():
            return np.array(filled, copy=True)
        inner = shrink(f * hole[..., None]) / np.maximum(cover, 1e-6)[..., None]
        outer = shrink(f * ~hole[..., None]) / np.maximum(1.0 - cover, 1e-6)[..., None]
        small_offset = _membrane(np.where(small_hole[..., None], inner, outer), small_hole)
        # Reach one coarse pixel past the hole (mean of the hole's neighbours) so that the
        # interpolation back to full size never blends the border with zero.
        weight = cv2.boxFilter(small_hole.astype(np.float32), -1, (3, 3), normalize=False)
        spread = cv2.boxFilter(small_offset, -1, (3, 3), normalize=False).reshape(small_offset.shape)
        spread = spread / np.maximum(weight, 1e-6)[..., None]
        small_offset = np.where(small_hole[..., None], small_offset, spread)
        offset = cv2.resize(small_offset, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
    out = np.array(filled, copy=True)
    corrected = np.clip(np.rint(f[hole] + offset[hole]), 0, 255).astype(np.uint8)
    out[hole] = corrected if out.ndim == 3 else corrected[:, 0]
    return out


def _membrane(f: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The harmonic offset of :func:`seam_correct` (float32 ``(H, W, C)``, zero outside ``hole``)."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spl

    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    n = len(ys)
    index = np.full((h, w), -1, np.int64)
    index[ys, xs] = np.arange(n)
    degree = np.zeros(n)
    rhs = np.zeros((n, f.shape[2]))
    rows, cols = [], []
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        y2, x2 = ys + dy, xs + dx
        inside = (y2 >= 0) & (y2 < h) & (x2 >= 0) & (x2 < w)  # the window's own edge: no condition there
        at = np.nonzero(inside)[0]
        y2, x2 = y2[inside], x2[inside]
        degree[at] += 1
        in_hole = hole[y2, x2]
        rows.append(at[in_hole])
        cols.append(index[y2[in_hole], x2[in_hole]])
        border = at[~in_hole]  # hole pixels next to a known pixel: the offset takes the jump
        rhs[border] += f[y2[~in_hole], x2[~in_hole]] - f[ys[border], xs[border]]
    r, c = np.concatenate(rows), np.concatenate(cols)
    lap = sp.csc_matrix((np.full(len(r), -1.0), (r, c)), shape=(n, n)) + sp.diags(degree, format="csc")
    offset = np.zeros((h, w, f.shape[2]), np.float32)
    # The matrix is symmetric: a minimum-degree ordering on A^T + A fills in least (about 0.1 s at 40k).
    offset[ys, xs] = spl.spsolve(lap, rhs, permc_spec="MMD_AT_PLUS_A").reshape(n, -1)
    return offset


def _xphoto():  # noqa: ANN202 - a module
    import cv2

    if not hasattr(cv2, "xphoto"):  # pragma: no cover - depends on the installed OpenCV build
        raise MissingExtraError("method fsr-fast needs OpenCV's contrib modules: install "
                                "opencv-contrib-python-headless in place of opencv-python-headless (scripts/setup does)")
    return cv2.xphoto


def fsr_fill(image: np.ndarray, hole: np.ndarray, *, quality: str = "fast") -> np.ndarray:
    """The image with ``hole`` rebuilt by frequency-selective reconstruction (``quality``: fast or best).

    Pixels outside the hole come back unchanged.
    """
    import cv2

    xphoto = _xphoto()
    flag = xphoto.INPAINT_FSR_FAST if quality == "fast" else xphoto.INPAINT_FSR_BEST
    known = np.where(hole, 0, 255).astype(np.uint8)  # xphoto's mask marks the known pixels
    # OpenCV's colour order: FSR works in its own transform of BGR.
    bgr = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    out = np.zeros_like(bgr)
    xphoto.inpaint(bgr, known, out, flag)
    result = np.array(image, dtype=np.uint8, copy=True)
    result[hole] = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)[hole]
    return result
