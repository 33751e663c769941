"""FID and local FID: the Fréchet distance between Inception-v3 pool features of two image sets.

Written by hand because the maintained implementations cannot run here: torchmetrics' FID
goes through ``torch-fidelity``, which depends on torchvision, and pytorch-fid imports
torchvision for its network. The network below is the "FID Inception" of TTUR / pytorch-fid
(the TensorFlow 2015-12-05 graph ported to torch) in plain torch, with the same module and
parameter names, so the published ``pt_inception-2015-12-05-6726825d.pth`` state dict loads
as it is. Differences from a stock Inception-v3 that matter for the numbers (and are kept):
the average pools of the mixed blocks exclude padding, the last block pools by max (a quirk
of the TF graph), inputs are resized to 299x299 bilinearly and scaled to [-1, 1].

* :func:`frechet_distance`: ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))`` with scipy's
  ``sqrtm`` (a small ridge is added when the product is singular, the imaginary residue dropped).
* :func:`fid_from_features`: the same from two feature sets (exact low-rank shortcut when
  there are fewer images than dimensions).
* FID: the 2048-d pool features of every output vs every real image (the ground truth when
  the item has one, else its input).
* Local FID (SmartBrush): the same on the crops of the edited region's bounding box.

Weights: a local ``.pth`` file (``--inception FILE``, ``MODEL_DIR/<file name>``, or the torch
hub cache where pytorch-fid stores it); nothing is downloaded at run time (the file is at
:data:`FID_WEIGHTS_URL`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffcompose.errors import InputError, WeightsMissingError

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILE}"
#: Features per image (the pool3 layer).
FEATURE_DIM = 2048


class BasicConv2d(nn.Module):
    """Convolution (no bias), batch norm (eps 1e-3), ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            d = conv(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """The last two blocks; ``max_pool`` for Mixed_7c (the TF graph's quirk), an exclusive average for Mixed_7b."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception network up to the 2048-d average pool (``fc`` kept so the full file loads)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, image01: torch.Tensor) -> torch.Tensor:
        """``(N, 2048)`` pool features of an RGB batch in [0, 1] (any size: resized to 299x299)."""
        x = F.interpolate(image01, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                     "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def load_state(model: FIDInceptionV3, state: dict) -> FIDInceptionV3:
    """Load a pytorch-fid state dict (``num_batches_tracked`` may be absent); anything else missing is refused."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsMissingError(f"not an FID Inception checkpoint: {len(missing)} tensors missing "
                                  f"(e.g. {(missing or unexpected)[0]}), {len(unexpected)} unexpected")
    return model.eval().requires_grad_(False)


def find_weights(source: str | os.PathLike | None = None, model_dir: Path | None = None) -> Path:
    """The local weights file: ``source`` (a file), ``model_dir/FILE``, or the torch hub cache."""
    candidates = []
    if source:
        candidates.append(Path(source).expanduser())
    if model_dir is not None:
        candidates.append(Path(model_dir) / FID_WEIGHTS_FILE)
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE)
    for path in candidates:
        if path.is_file():
            return path
    raise WeightsMissingError(f"FID Inception weights not found ({', '.join(map(str, candidates))}); download "
                              f"{FID_WEIGHTS_URL} and pass --inception FILE (or put it in --model-dir)")


def load_inception(source: str | os.PathLike | None = None, model_dir: Path | None = None,
                   device: torch.device | str = "cpu") -> FIDInceptionV3:
    path = find_weights(source, model_dir)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise InputError(f"FID Inception weights {path} are not a weights-only torch checkpoint") from None
    return load_state(FIDInceptionV3(), state).to(device)


@torch.no_grad()
def inception_features(model: nn.Module, images: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """``(N, D)`` float64 features of uint8 RGB images (any sizes: each is resized to 299x299)."""
    device = next(model.parameters()).device
    feats = []
    for i in range(0, len(images), batch_size):
        batch = [torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).float()[None] / 255.0
                 for im in images[i:i + batch_size]]
        batch = [F.interpolate(b, size=(299, 299), mode="bilinear", align_corners=False) for b in batch]
        feats.append(model(torch.cat(batch).to(device)).double().cpu().numpy())
    return np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM))


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``(N, D)`` features."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise InputError("FID needs at least 2 images per set")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two Gaussians have different dimensions")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product (fewer samples than dimensions): add a small ridge
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two ``(N, D)`` feature sets.

    With fewer images than dimensions (the usual case for a per-engine group: 2048-d features)
    the covariances have low rank and the trace term is computed exactly from the features:
    with ``S1 = A'A``, ``S2 = B'B`` (centred features over sqrt(N - 1)), the eigenvalues of
    ``S1 S2`` are the squared singular values of ``A B'``, so ``Tr sqrtm(S1 S2)`` is the sum
    of those singular values, an (N1 x N2) problem instead of a 2048x2048 ``sqrtm`` (seconds
    per call on a CPU). Otherwise :func:`frechet_distance`.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu1, s1 = gaussian_stats(a)
    mu2, s2 = gaussian_stats(b)
    if max(len(a), len(b)) >= a.shape[1]:
        return frechet_distance(mu1, s1, mu2, s2)
    fa = (a - mu1) / math.sqrt(len(a) - 1)
    fb = (b - mu2) / math.sqrt(len(b) - 1)
    trace_sqrt = float(np.linalg.svd(fa @ fb.T, compute_uv=False).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)
