"""Image-quality metrics shared by the benchmarks of every engine."""

from diffcompose.evaluation.metrics import fmse, mae, mse, psnr, ssim, texture_distance

__all__ = ["mse", "fmse", "psnr", "ssim", "mae", "texture_distance"]
