"""The BrushNet engine: text-guided inpainting, a trained branch beside a frozen SD-1.5 model.

Per request (on the window the runner cuts around the region), as the public pipeline
(``StableDiffusionBrushNetPipeline``) and its example script do:

1. the masked image is the photo with the hole painted black (the example script's
   ``init_image * (1 - mask)``); its VAE latent and the *keep* mask (1 outside the hole),
   nearest-resampled to the latent size, are the branch's conditioning
   (:func:`~.model.brushnet_conditioning`);
2. sampling starts from Gaussian noise (times the scheduler's initial sigma); each step the
   branch's residuals, times ``conditioning_scale``, are added to the base UNet
   (:func:`~.model.unet_with_residuals`); classifier-free guidance batches ``[negative,
   prompt]`` through both networks in one call. The attention-free branch never reads the text,
   so it runs once per step on the latents and its residuals serve both halves (the public
   pipeline runs it on the doubled batch: the same numbers, twice the work);
3. the decoded image goes through the blending step (:mod:`.blend`, ``--blend``, on by
   default): the window's original pixels outside the hole, through a blurred mask.

Deliberate differences from the public pipeline: the masked image's latent is the VAE
posterior's *mean* (the public pipeline draws a posterior sample per batch element from the
global, unseeded RNG, so its uncond and cond halves see slightly different conditioning);
guess mode and the per-step ``control_guidance_start/end`` window (both off by default there)
are not offered. Random draws come from one generator: the initial noise, then the scheduler's.

``--model`` is the branch: a published BrushNet folder (``config.json`` +
``diffusion_pytorch_model.safetensors``), or a folder holding a whole SD model with the branch
in ``brushnet/`` (``--model tiny`` and this layout bring their own base). ``--base`` names
the SD-1.5 text-to-image model it is added to (:data:`~.options.DEFAULT_BASE` by default);
a changed ``--base`` is loaded on the next request that names it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diffcompose.errors import InputError, WeightsMissingError
from diffcompose.methods.brushnet.blend import blend
from diffcompose.methods.brushnet.model import BrushNetModel, brushnet_conditioning, check_unet, unet_with_residuals
from diffcompose.methods.brushnet.options import DEFAULT_BASE, NO_WEIGHTS, BrushNetOptions
from diffcompose.methods.brushnet.tiny import BRANCH_DIR
from diffcompose.methods.diffusion import DiffusionEngine
from diffcompose.models import codec
from diffcompose.models.device import make_generator
from diffcompose.models.hub import TINY, resolve_model
from diffcompose.models.loader import SDComponents, encode_prompts, load_component, load_sd, resolve_sd, ways_out
from diffcompose.models.sampling import denoise, initial_noise, is_guided, make_scheduler
from diffcompose.progress import RunContext
from diffcompose.regions import WindowPolicy

log = logging.getLogger(__name__)

#: Files a hub download of a branch (or of a folder with one in ``brushnet/``) needs.
BRANCH_PATTERNS = ["config.json", "*.safetensors", "*.bin", "model_index.json", f"{BRANCH_DIR}/*",
                   "unet/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*"]
#: The UNet config entries a branch must share with its base (the residuals' shapes follow them).
GEOMETRY = ("block_out_channels", "layers_per_block", "in_channels")


def branch_dir(root: Path) -> Path:
    """Where the branch of a model folder is: ``root/brushnet`` (a whole model) or ``root`` itself."""
    for candidate in (root / BRANCH_DIR, root):
        if (candidate / "config.json").is_file():
            return candidate
    raise WeightsMissingError(f"{root} is not a BrushNet folder: it has neither config.json nor "
                              f"{BRANCH_DIR}/config.json; {NO_WEIGHTS.split(': ', 1)[1]}")


def locate(name: str) -> Path:
    """A local folder for ``--model`` (a path or hub id) holding a branch."""
    root = resolve_model(name, [], what="BrushNet model", allow_patterns=BRANCH_PATTERNS,
                         hint=ways_out("pass --model DIR (a BrushNet folder: config.json + weights)"))
    branch_dir(root)
    return root


def has_base(root: Path) -> bool:
    """Whether a model folder carries its own SD base (``model_index.json`` and a ``unet/``)."""
    return (root / "model_index.json").is_file() and (root / "unet" / "config.json").is_file()


def check_fits(branch: BrushNetModel, unet: Any, base: str) -> None:
    """Refuse a base whose UNet cannot take the branch's residuals (another geometry, an inpainting UNet)."""
    bc, uc = branch.config, unet.config
    if uc.in_channels != 4:
        raise InputError(f"--base {base}: its UNet takes {uc.in_channels} input channels; BrushNet adds to a "
                         "text-to-image SD-1.5 UNet (4), not an inpainting one")
    for key in GEOMETRY:
        if list(np.atleast_1d(bc[key])) != list(np.atleast_1d(uc[key])):
            raise InputError(f"--base {base} does not fit this BrushNet branch: its UNet's {key} is {uc[key]}, "
                             f"the branch's {bc[key]}")
    if branch.has_cross_attention and bc.cross_attention_dim != uc.cross_attention_dim:
        raise InputError(f"--base {base}: text width {uc.cross_attention_dim}, the branch's {bc.cross_attention_dim}")
    try:
        check_unet(unet)
    except ValueError as exc:
        raise InputError(f"--base {base}: {exc}") from None


class BrushNetEngine(DiffusionEngine):
    """Fill a region with what a prompt describes: a BrushNet branch beside any SD-1.5 model."""

    name = "brushnet"
    branch: BrushNetModel
    root: Path
    sd: SDComponents | None
    base_name: str | None

    def _load(self) -> None:
        self._resolve_device()
        self.root = self.model_dir(locate, missing=NO_WEIGHTS)
        where = branch_dir(self.root)
        self.branch = load_component(where, BRANCH_DIR, self.device, self.dtype, cls=BrushNetModel, subfolder=".")
        self.sd, self.base_name = None, None
        log.info("BrushNet branch from %s (%s cross-attention)", where,
                 "with" if self.branch.has_cross_attention else "without")

    def modules(self) -> list[torch.nn.Module]:
        return [self.branch] + (self.sd.modules if self.sd is not None else [])

    def base(self, options: BrushNetOptions) -> SDComponents:
        """The SD base for ``options`` (see the module docstring), loaded when it changes."""
        name = options.base or (str(self.root) if has_base(self.root) else DEFAULT_BASE)
        if self.sd is None or self.base_name != name:
            if name == TINY:
                from diffcompose.models.tiny import ensure_tiny_model

                root = ensure_tiny_model()
            else:
                root = resolve_sd(name, hint=ways_out("pass --base DIR (a local SD-1.5 model in the diffusers "
                                                      "layout)"))
            self.sd = None  # the old base is dropped before the new one is read
            sd = load_sd(root, self.device, self.dtype)
            check_fits(self.branch, sd.unet, name)
            self.sd, self.base_name = sd, name
            log.info("BrushNet base: %s", root)
        return self.sd

    def window_policy(self, task: str, options: BrushNetOptions) -> WindowPolicy:
        sd = self.base(options)
        size = options.resolution or sd.resolution
        return WindowPolicy(size, codec.latent_multiple(sd.unet, sd.vae), context=options.context)

    @torch.no_grad()
    def _inpaint(self, *, image: np.ndarray, mask: np.ndarray, prompt: str, negative_prompt: str,
                 options: BrushNetOptions, ctx: RunContext) -> list[np.ndarray]:
        sd, dev, dt = self.base(options), self.device, self.dtype
        n = options.num_images
        generator = make_generator(ctx.seed)
        guided = is_guided(options.guidance_scale)
        context = encode_prompts(sd, [negative_prompt, prompt] if guided else [prompt]).repeat_interleave(n, dim=0)

        sched = make_scheduler(options.scheduler, dict(sd.scheduler.config))
        sched.set_timesteps(options.steps, device=dev)
        stride = codec.vae_stride(sd.vae)
        h, w = image.shape[0] // stride, image.shape[1] // stride
        latents = initial_noise(sd.vae, n, h, w, generator).to(dev, dt) * sched.init_noise_sigma

        cond = self.conditioning(image, mask, sd, (h, w)).expand(n, -1, -1, -1)
        model = self.model_fn(sd.unet, context, cond, options.conditioning_scale, guided)
        log.info("brushnet %dx%d, %d steps (%s), scale %g", image.shape[1], image.shape[0], options.steps,
                 options.scheduler, options.conditioning_scale)
        latents = denoise(model, sched, latents, guidance_scale=options.guidance_scale, generator=generator,
                          eta=options.eta, progress=ctx.progress("inpaint", len(sched.timesteps)),
                          preview=lambda z: codec.tensor_to_images(codec.decode(sd.vae, z[:1]))[0])
        images = codec.tensor_to_images(codec.decode(sd.vae, latents).clamp(-1, 1))
        if options.blend:
            images = [blend(image, out, mask, options.blend_kernel) for out in images]
        return images

    def conditioning(self, image: np.ndarray, mask: np.ndarray, sd: SDComponents, size: tuple[int, int]
                     ) -> torch.Tensor:
        """The branch's 5 channels for one window (module docstring, point 1)."""
        masked = image * (~mask.astype(bool))[:, :, None]
        z = codec.encode(sd.vae, codec.images_to_tensor(masked, self.device, self.dtype))
        hole = F.interpolate(codec.mask_to_tensor(mask, self.device, self.dtype), size=size)
        return brushnet_conditioning(z, hole)

    def model_fn(self, unet: Any, context: torch.Tensor, cond: torch.Tensor, scale: float, guided: bool) -> Any:
        """The model function for the shared loop (module docstring, point 2)."""
        branch = self.branch
        once = guided and not branch.has_cross_attention
        cond_in = cond if once or not guided else torch.cat([cond, cond])

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if scale == 0:  # the branch adds nothing: the plain base model
                return unet_with_residuals(unet, x, t, context, None)
            if once:  # both halves of the batch hold the same latents, and the branch ignores the text
                res = branch(x[: x.shape[0] // 2], t, None, cond_in, scale).repeat(2)
            else:
                res = branch(x, t, context, cond_in, scale)
            return unet_with_residuals(unet, x, t, context, res)

        return model
