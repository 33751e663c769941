"""The PowerPaint engine: one model, four tasks, picked by learned task prompts.

Per request (on the window the runner cuts around the region):

1. the task's prompts (:mod:`.prompts`): removal and outpainting are the context task
   (``P_ctxt`` positive, ``P_obj`` negative), ``inpaint`` the object task (``P_obj``) or, with
   ``--mode shape``, the shape task, whose embeddings slide from ``P_ctxt`` to ``P_shape`` with
   the fitting degree; each positive and negative context is ``t * E(A) + (1 - t) * E(B)``
   (:func:`.tokens.encode_pair`);
2. **v1**: SD-inpainting's UNet input ``[z_t, mask, z_masked]`` (the hole at latent size,
   nearest; the VAE latent of the image with the hole zeroed, a posterior sample); random
   draws from one generator: the initial noise, then the posterior sample;
3. **v2**: the BrushNet branch reads ``[z_t, z_masked, keep]`` (``keep`` = 1 outside the hole)
   with the task-prompt context and hands its per-block features, times
   ``--conditioning-scale``, to the frozen base UNet, which reads the plain prompt (v2's user
   text, with "empty scene" words for removal and outpainting); as in the public pipeline the
   masked image's posterior sample is drawn from a generator of its own seeded with the seed,
   one sample per guidance half;
4. guidance, progress, previews and cancellation come from the shared loop
   (:func:`~diffcompose.models.sampling.denoise`), one batched ``[uncond, cond]`` call per step.

Outpainting is removal's context task on the grown canvas the task built
(:func:`~diffcompose.methods.tasks.prepare_outpaint`): its new area is the hole.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diffcompose.errors import WeightsMissingError
from diffcompose.methods.diffusion import DiffusionEngine
from diffcompose.methods.powerpaint.options import DEFAULT_MODELS, FillOptions, InpaintOptions, PowerPaintOptions
from diffcompose.methods.powerpaint.prompts import CONTEXT, OBJECT, SHAPE, TaskPrompts, check_no_task_words, task_prompts
from diffcompose.methods.powerpaint.tokens import encode_pair, encode_text
from diffcompose.models import codec
from diffcompose.models.device import make_generator
from diffcompose.models.hub import resolve_model, resolve_name
from diffcompose.models.loader import SDComponents, load_component, load_sd, resolve_sd
from diffcompose.models.sampling import denoise, initial_noise, is_guided, make_scheduler
from diffcompose.progress import RunContext
from diffcompose.regions import WindowPolicy

log = logging.getLogger(__name__)

#: Key of ``model_index.json`` that marks a converted PowerPaint folder and says its version.
VERSION_KEY = "powerpaint_version"
HINT = ("; pass --model DIR (a folder from 'diffcompose convert powerpaint'), or --model tiny for a smoke test, "
        "or use --engine classical for removal")


@dataclass
class PowerPaintModel:
    """One loaded version. ``sd``: v1's fine-tuned inpainting model, or v2's frozen base (its UNet and
    plain text encoder); ``task_encoder``: the text encoder that knows the task tokens (v1: ``sd``'s);
    ``brushnet``: v2's branch."""

    version: int
    sd: SDComponents
    task_encoder: Any
    brushnet: Any = None
    modules: list[torch.nn.Module] = field(default_factory=list)


def model_version(root: Path) -> int | None:
    """The version a converted folder holds (``None``: not a converted PowerPaint folder)."""
    try:
        index = json.loads((root / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = index.get(VERSION_KEY) if isinstance(index, dict) else None
    return version if version in (1, 2) else None


def version_folder(root: Path, version: int) -> Path | None:
    """Where ``root`` keeps ``version``: itself, or its ``v1/`` / ``v2/`` subfolder."""
    for cand in (root, root / f"v{version}"):
        if model_version(cand) == version:
            return cand
    return None


class PowerPaintEngine(DiffusionEngine):
    """PowerPaint v1 and v2: removal, text- and shape-guided inpainting, outpainting."""

    name = "powerpaint"

    def _load(self) -> None:
        """Only the device: each version loads on its first request (``--version`` is a per-request option)."""
        self._resolve_device()
        self.versions: dict[int, PowerPaintModel] = {}

    def modules(self) -> list[torch.nn.Module]:
        return [m for pp in getattr(self, "versions", {}).values() for m in pp.modules]

    # ------------------------------------------------------------------ loading

    def model_for(self, version: int) -> PowerPaintModel:
        """The loaded ``version`` (loaded now on first use; the caller holds the engine's lock)."""
        if version not in self.versions:
            self.versions[version] = self._load_version(version)
        return self.versions[version]

    def _root(self, version: int) -> Path:
        from diffcompose.methods.powerpaint.tiny import ensure_tiny_powerpaint

        name = self.model or DEFAULT_MODELS[version]
        return resolve_name(name, tiny=ensure_tiny_powerpaint,
                            locate=lambda n: resolve_model(n, [], what="PowerPaint model", hint=HINT))

    def _load_version(self, version: int) -> PowerPaintModel:
        root = self._root(version)
        folder = version_folder(root, version)
        if folder is None:
            from diffcompose.methods.powerpaint.convert import V2_BRUSHNET, is_public_v1, load_public_v1

            if version == 1 and is_public_v1(root):
                sd = load_public_v1(root, self.device, self.dtype)
                return PowerPaintModel(1, sd, sd.text_encoder, modules=sd.modules)
            if version == 2 and (root / V2_BRUSHNET).is_file():
                raise WeightsMissingError(f"{root} is the public PowerPaint v2 checkpoint: convert it first "
                                          f"(diffcompose convert powerpaint {root / V2_BRUSHNET} OUT_DIR) and pass "
                                          "--model OUT_DIR")
            held = [v for v in (1, 2) if version_folder(root, v) is not None]
            what = f"holds PowerPaint v{held[0]}, not v{version}" if held else "is not a PowerPaint model"
            raise WeightsMissingError(f"{root} {what}; pass --version {held[0]}" if held else
                                      f"{root} {what}{HINT}")
        if version == 1:
            sd = load_sd(resolve_sd(str(folder), hint=HINT), self.device, self.dtype)
            if sd.unet.config.in_channels != 9:
                raise WeightsMissingError(f"{folder}: a PowerPaint v1 UNet takes 9 input channels, this one "
                                          f"{sd.unet.config.in_channels}")
            return PowerPaintModel(1, sd, sd.text_encoder, modules=sd.modules)
        return self._load_v2(folder)

    def _load_v2(self, folder: Path) -> PowerPaintModel:
        from diffcompose.methods.brushnet.model import BrushNetModel
        from transformers import CLIPTextModel

        sd = load_sd(resolve_sd(str(folder), hint=HINT), self.device, self.dtype)
        brushnet = load_component(folder, "brushnet", self.device, self.dtype, cls=BrushNetModel)
        task_encoder = load_component(folder, "text_encoder_brushnet", self.device, self.dtype, cls=CLIPTextModel)
        return PowerPaintModel(2, sd, task_encoder, brushnet, modules=[*sd.modules, brushnet, task_encoder])

    # ------------------------------------------------------------------ the tasks

    def window_policy(self, task: str, options: PowerPaintOptions) -> WindowPolicy:
        sd = self.model_for(options.version).sd
        size = options.resolution or sd.resolution
        return WindowPolicy(size, codec.latent_multiple(sd.unet, sd.vae), context=options.context)

    @torch.no_grad()
    def _remove(self, *, image: np.ndarray, mask: np.ndarray, options: FillOptions, ctx: RunContext) -> np.ndarray:
        prompts = task_prompts(CONTEXT, options.prompt, options.negative_prompt, options.version)
        return self.fill(image, mask, prompts, 1.0, options, ctx, "remove")[0]

    @torch.no_grad()
    def _outpaint(self, *, image: np.ndarray, mask: np.ndarray, extend: tuple[int, int, int, int],
                  options: FillOptions, ctx: RunContext) -> np.ndarray:
        prompts = task_prompts("outpaint", options.prompt, options.negative_prompt, options.version)
        return self.fill(image, mask, prompts, 1.0, options, ctx, "outpaint")[0]

    @torch.no_grad()
    def _inpaint(self, *, image: np.ndarray, mask: np.ndarray, prompt: str, negative_prompt: str,
                 options: InpaintOptions, ctx: RunContext) -> list[np.ndarray]:
        check_no_task_words("--prompt", prompt)
        check_no_task_words("--negative-prompt", negative_prompt)
        shape = options.mode == "shape"
        prompts = task_prompts(SHAPE if shape else OBJECT, prompt, negative_prompt, options.version)
        return self.fill(image, mask, prompts, options.fitting_degree if shape else 1.0, options, ctx, "inpaint")

    def task_context(self, pp: PowerPaintModel, prompts: TaskPrompts, t: float, guided: bool) -> torch.Tensor:
        """The task-token context: ``[negative, positive]`` when guided, each interpolated with ``t``."""
        tok, enc, dev = pp.sd.tokenizer, pp.task_encoder, self.device
        pos = encode_pair(tok, enc, prompts.positive, t, dev)
        if not guided:
            return pos
        return torch.cat([encode_pair(tok, enc, prompts.negative, t, dev), pos])

    def fill(self, image: np.ndarray, mask: np.ndarray, prompts: TaskPrompts, t: float, options: PowerPaintOptions,
             ctx: RunContext, stage: str) -> list[np.ndarray]:
        """Sample ``options.num_images`` fills of ``mask`` in ``image`` (the module docstring's steps)."""
        pp = self.model_for(options.version)
        sd, dev, dt = pp.sd, self.device, self.dtype
        n = options.num_images
        generator = make_generator(ctx.seed)
        guided = is_guided(options.guidance_scale)
        context = self.task_context(pp, prompts, t, guided).to(dt).repeat_interleave(n, dim=0)

        sched = make_scheduler(options.scheduler, dict(sd.scheduler.config))
        sched.set_timesteps(options.steps, device=dev)
        stride = codec.vae_stride(sd.vae)
        h, w = image.shape[0] // stride, image.shape[1] // stride
        latents = initial_noise(sd.vae, n, h, w, generator).to(dev, dt) * sched.init_noise_sigma
        hole = codec.mask_to_tensor(mask, dev, dt)
        if pp.version == 1:
            masked = codec.images_to_tensor(image, dev, dt) * (hole < 0.5)
            model = self._v1_model(sd, masked, hole, context, n, guided, generator, (h, w))
        else:
            model = self._v2_model(pp, image, mask, hole, context, prompts, n, guided, ctx.seed, (h, w), options)
        log.info("powerpaint v%d %s %dx%d, %d steps (%s)", pp.version, stage, image.shape[1], image.shape[0],
                 options.steps, options.scheduler)
        latents = denoise(model, sched, latents, guidance_scale=options.guidance_scale, generator=generator,
                          eta=options.eta, progress=ctx.progress(stage, len(sched.timesteps)),
                          preview=lambda z: codec.tensor_to_images(codec.decode(sd.vae, z[:1]))[0])
        return codec.tensor_to_images(codec.decode(sd.vae, latents).clamp(-1, 1))

    @staticmethod
    def _v1_model(sd: SDComponents, masked: torch.Tensor, hole: torch.Tensor, context: torch.Tensor, n: int,
                  guided: bool, generator: torch.Generator, size: tuple[int, int]) -> Any:
        """v1's model function: the SD-inpainting UNet on ``[z_t, mask, z_masked]`` with the task context."""
        z_masked = codec.encode(sd.vae, masked, generator)
        cond = torch.cat([F.interpolate(hole, size=size), z_masked], 1).expand(n, -1, -1, -1)
        if guided:
            cond = torch.cat([cond, cond])

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return sd.unet(torch.cat([x, cond], dim=1), t, encoder_hidden_states=context).sample

        return model

    def _v2_model(self, pp: PowerPaintModel, image: np.ndarray, mask: np.ndarray, hole: torch.Tensor, context: torch.Tensor,
                  prompts: TaskPrompts, n: int, guided: bool, seed: int, size: tuple[int, int],
                  options: PowerPaintOptions) -> Any:
        """v2's model function: the BrushNet branch (task context) adds its residuals to the frozen base
        UNet (plain prompt context). The branch conditioning is the latent of the image with the hole
        black and the keep mask; its posterior sample comes from a generator of its own (module
        docstring, point 3)."""
        from diffcompose.methods.brushnet.model import brushnet_conditioning, unet_with_residuals

        sd, dev, dt = pp.sd, self.device, self.dtype
        halves = 2 if guided else 1
        black = codec.images_to_tensor(np.where(mask[..., None], 0, image).astype(np.uint8), dev, dt)
        z_masked = codec.encode(sd.vae, black, make_generator(seed), samples=halves * n)
        cond = brushnet_conditioning(z_masked, F.interpolate(hole, size=size))
        base = encode_text(sd.tokenizer, sd.text_encoder, prompts.base, dev).to(dt)
        if guided:
            base = torch.cat([encode_text(sd.tokenizer, sd.text_encoder, prompts.base_negative, dev).to(dt), base])
        base = base.repeat_interleave(n, dim=0)
        scale = options.conditioning_scale

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            residuals = pp.brushnet(x, t, context, cond, conditioning_scale=scale)
            return unet_with_residuals(sd.unet, x, t, base, residuals)

        return model

