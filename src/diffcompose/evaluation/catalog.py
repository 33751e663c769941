"""The metric names and the name of a run variant: what the scorer (:mod:`.evaluate`) and the
report (:mod:`.report`) both need, in a module of their own so neither imports the other's
heavy half (the report is written by the scorer)."""

from __future__ import annotations

PIXEL_METRICS = ("mse", "psnr", "ssim", "mae", "fmse", "fpsnr", "fssim", "fmae", "texture", "bg-mse", "bg-psnr")
MODEL_METRICS = ("lpips", "clip", "clip-i", "dino", "fid", "local-fid")
SET_METRICS = ("fid", "local-fid")
ALL_METRICS = PIXEL_METRICS + MODEL_METRICS
#: Metrics where higher is better (the report says so in the header).
HIGHER_IS_BETTER = {"psnr", "ssim", "fpsnr", "fssim", "bg-psnr", "clip", "clip-i", "dino"}


def variant(item: dict) -> str:
    """The engine and its options, e.g. ``classical method=telea``: what an aggregate row stands for."""
    opts = item.get("options") or {}
    return " ".join([str(item.get("engine"))] + [f"{k}={opts[k]}" for k in sorted(opts)])
