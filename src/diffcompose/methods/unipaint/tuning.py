"""Uni-paint's masked fine-tuning of the UNet on the user's own photo, on the shared training loop.

Facts from the public code (``inpaint*.ipynb``, ``gradio_demo/demo.py``): Adam at 1e-5 over every
UNet parameter (nothing else is tuned), 100 iterations, one sample per iteration; each iteration

* draws ``t`` uniformly from the 1000 training timesteps and fresh noise, noises the latent of the
  photo with its region zeroed (``E(x * (1 - m))``, one posterior sample taken once) and takes the
  mean squared error of the predicted noise **only on the known region**: prediction and noise are
  both multiplied by ``1 - m_z`` before the mean over all elements (so the region adds zeros), where
  ``m_z`` is the pixel mask resampled to the latent (nearest) and dilated by a 3x3 square;
  the prompt while tuning is the empty text;
* with an exemplar, adds the same loss for the exemplar pasted at a random square inside the
  region's bounding box (side 0.4..0.9 of the box's shorter side, flipped left-right half the time,
  on a zero canvas), masked by that square (bilinear at latent size), with the exemplar's
  placeholder prompt, drawn before the background term.

The run goes through :func:`diffcompose.training.loop.fit` (AdamW with weight decay 0 is Adam),
which owns the seeded generators, progress and cancellation (within one step); it writes no
checkpoint (``checkpoint_every = 0``) and exports nothing: the tuned UNet lives for one job.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from diffcompose.errors import InputError
from diffcompose.progress import RunContext

log = logging.getLogger(__name__)

#: Tunings run one at a time in a process: accelerate's state is process-wide.
_TUNING = threading.Lock()
#: The exemplar square's side as a share of the region box's shorter side (public: 0.4..0.9), and the flip odds.
EXEMPLAR_SIDE = (0.4, 0.9)
FLIP_ODDS = 0.5


def latent_hole(mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """``(1, 1, h, w)``: the pixel region ``(1, 1, H, W)`` at latent size (nearest), dilated by a 3x3 square."""
    m = F.interpolate(mask.float(), size=latent_size)
    return F.max_pool2d(m, 3, stride=1, padding=1)


def q_sample(z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``z_t = sqrt(a_t) z0 + sqrt(1 - a_t) noise`` (DDPM forward process)."""
    a = alphas_cumprod.to(z0.device)[t.to(z0.device)].view(-1, 1, 1, 1).to(z0.dtype)
    return a.sqrt() * z0 + (1 - a).sqrt() * noise


def masked_noise_loss(pred: torch.Tensor, noise: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predicted noise on ``keep`` (1 = counted), averaged over *all* elements."""
    return F.mse_loss(pred * keep, noise * keep)


def region_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the largest outer contour of the region (the public exemplar box: its right
    and bottom sides are the contour's ``x + w`` / ``y + h``, kept inside the image)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8) * 255, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    return x, y, min(mask.shape[1] - 1, x + w), min(mask.shape[0] - 1, y + h)


def _randint(lo: int, hi: int, gen: torch.Generator) -> int:
    return int(torch.randint(lo, max(hi, lo + 1), (1,), generator=gen))


def place_exemplar(exemplar: torch.Tensor, box: tuple[int, int, int, int], gen: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(canvas, square mask): ``exemplar`` ``(1, 3, H, W)`` resized to a random square inside ``box``.

    Draws, in order: the side, the left and top corner, the flip."""
    x0, y0, x1, y1 = box
    short = min(x1 - x0, y1 - y0)
    side = _randint(max(1, int(short * EXEMPLAR_SIDE[0])), int(short * EXEMPLAR_SIDE[1]), gen)
    left = _randint(x0, x1 - side, gen)
    top = _randint(y0, y1 - side, gen)
    if float(torch.rand(1, generator=gen)) < FLIP_ODDS:
        exemplar = torch.flip(exemplar, dims=[3])
    canvas = torch.zeros_like(exemplar)
    canvas[:, :, top:top + side, left:left + side] = F.interpolate(exemplar, size=(side, side), mode="bilinear")
    square = torch.zeros_like(exemplar[:, :1])
    square[:, :, top:top + side, left:left + side] = 1
    return canvas, square


@dataclass
class Exemplar:
    """What the exemplar term needs: its pixels at the working size, its box, its prompt's context."""

    pixels: torch.Tensor  # (1, 3, H, W) in [-1, 1]
    box: tuple[int, int, int, int]
    context: torch.Tensor  # (1, 77, D): the placeholder prompt


@dataclass
class TuneInputs:
    """The fixed tensors of the tuning (float32 on the device): the known latent, where it counts, the
    empty prompt's context, the schedule; ``encode(pixels, generator)``: VAE posterior sample, scaled."""

    z_known: torch.Tensor
    keep: torch.Tensor
    null_context: torch.Tensor
    alphas_cumprod: torch.Tensor
    encode: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    exemplar: Exemplar | None = None


class Denoiser(torch.nn.Module):
    """The UNet as the module the loop trains: ``(z_t, t, context) -> predicted noise``."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(z_t, t, encoder_hidden_states=context).sample


def tune_terms(model: Any, inputs: TuneInputs, gen: torch.Generator) -> list[torch.Tensor]:
    """``[loss, background term, exemplar term]`` of one iteration (the exemplar term 0 without one)."""
    dev = inputs.z_known.device
    steps = len(inputs.alphas_cumprod)
    exemplar_loss = torch.zeros((), device=dev)
    if inputs.exemplar is not None:
        canvas, square = place_exemplar(inputs.exemplar.pixels.cpu(), inputs.exemplar.box, gen)
        z_ref = inputs.encode(canvas.to(dev), gen).float()
        square_z = F.interpolate(square, size=z_ref.shape[-2:], mode="bilinear").to(dev)
        t1 = torch.randint(steps, (1,), generator=gen)
        noise1 = torch.randn(z_ref.shape, generator=gen).to(dev)
        pred = model(q_sample(z_ref, t1, noise1, inputs.alphas_cumprod), t1.to(dev), inputs.exemplar.context)
        exemplar_loss = masked_noise_loss(pred.float(), noise1, square_z)
    t2 = torch.randint(steps, (1,), generator=gen)
    noise2 = torch.randn(inputs.z_known.shape, generator=gen).to(dev)
    pred = model(q_sample(inputs.z_known, t2, noise2, inputs.alphas_cumprod), t2.to(dev), inputs.null_context)
    background = masked_noise_loss(pred.float(), noise2, inputs.keep)
    return [background + exemplar_loss, background, exemplar_loss]


@dataclass
class TuneConfig:
    """The shared loop's run settings for a tuning inside a job (one sample a step, constant rate, Adam)."""

    max_steps: int
    learning_rate: float
    seed: int
    mixed_precision: str = "no"
    weight_decay: float = 0.0
    ema_decay: float | None = None
    resume: str | None = None
    gradient_accumulation_steps: int = 1
    batch_size: int = 1
    num_workers: int = 0
    max_grad_norm: float = 0.0
    log_every: int = 25
    checkpoint_every: int = 0


class _Iterations(torch.utils.data.Dataset):
    """One item per iteration; the iteration's randomness comes from the loop's generator, not the data."""

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, index: int) -> dict[str, int]:
        return {"iteration": index}


def mixed_precision(device: torch.device, dtype: torch.dtype) -> str:
    """The loop's precision: the engine's half type on a GPU (weights stay float32), none on a CPU."""
    if device.type != "cuda":
        return "no"
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "no")


def tune_unet(unet: Any, inputs: TuneInputs, *, steps: int, learning_rate: float, ctx: RunContext,
              device: torch.device, dtype: torch.dtype, task: str) -> Any:
    """A float32 copy of ``unet`` after ``steps`` iterations of masked fine-tuning (``unet`` is left as it is).

    One tuning at a time in a process (accelerate's state is process-wide)."""
    with _TUNING:
        return _tune(unet, inputs, steps=steps, learning_rate=learning_rate, ctx=ctx, device=device, dtype=dtype,
                     task=task)


def fresh_accelerator(device: torch.device, dtype: torch.dtype) -> Any:
    """An ``Accelerator`` for this job's device and precision that leaves the model where it is.

    accelerate keeps one process-wide state and refuses a second ``Accelerator`` with another
    device kind or precision (a CPU job after a GPU one, a trainer's bf16 run before): the state
    is reset first, and again after the tuning. Callers hold :data:`_TUNING`, so no other tuning is using it.
    """
    from accelerate import Accelerator

    reset_accelerate()
    return Accelerator(cpu=device.type == "cpu", mixed_precision=mixed_precision(device, dtype),
                       device_placement=False)


def _tune(unet: Any, inputs: TuneInputs, *, steps: int, learning_rate: float, ctx: RunContext,
          device: torch.device, dtype: torch.dtype, task: str) -> Any:
    from diffcompose.training.loop import Recipe, fit

    tuned = copy.deepcopy(unet).float().train()
    tuned.requires_grad_(True)
    model = Denoiser(tuned)
    named = list(tuned.named_parameters())
    cfg = TuneConfig(max_steps=steps, learning_rate=learning_rate, seed=ctx.seed,
                     mixed_precision=mixed_precision(device, dtype))
    acc = fresh_accelerator(device, dtype)
    curves = ("losses", "background", "exemplar")
    recipe = Recipe(task=task, model=model, params=[p for _, p in named], named=named, dataset=_Iterations(),
                    micro_step=lambda m, batch, gen: tune_terms(m, inputs, gen), lr_lambda=lambda step: 1.0,
                    weights=dict, load_weights=lambda weights, path: None, export=lambda ema: None,
                    curves=curves, salt=24)
    log.info("masked fine-tuning: %d iterations at lr %.1e", steps, learning_rate)
    try:
        # the output folder is never read or written: no resume, no checkpoints, no export
        fit(cfg, acc, Path("."), recipe, on_progress=ctx.on_progress, cancel=ctx.cancel)
    finally:
        tuned.requires_grad_(False)
        reset_accelerate()  # the process is left as if no accelerate run had happened (a trainer may come next)
    return tuned.eval()


def reset_accelerate() -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def check_exemplar_region(box: tuple[int, int, int, int]) -> None:
    if min(box[2] - box[0], box[3] - box[1]) < 3:
        raise InputError("the region is too thin to place the exemplar in while fine-tuning (under 3 pixels)")
