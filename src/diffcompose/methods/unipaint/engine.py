"""The Uni-paint engine: per-photo masked fine-tuning, then DDIM with blending and masked attention.

One loaded text-to-image SD serves every job; each job tunes its own float32 copy of the UNet
(:mod:`.tuning`), so no job sees another's photo. The modes are the public code's:

* ``remove``: unconditional (empty prompt, no guidance, hence no attention control);
* ``inpaint``: the prompt, guided; with ``--stroke`` the stroke is blended in at ``stroke_start``
  and the prompt read from then on (:mod:`.sampling`);
* ``paint``: the exemplar's placeholder prompt (:mod:`.exemplar`), tuned on the exemplar too.

Random draws come in a fixed order: the known latent's VAE sample (and the stroke's), the tuning
(the shared loop's own generators from the seed), then the initial noise and the blends' noise.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from diffcompose.errors import InputError
from diffcompose.methods.diffusion import DiffusionEngine
from diffcompose.methods.unipaint import exemplar as ex
from diffcompose.methods.unipaint.attention import RegionMasks, masked_attention
from diffcompose.methods.unipaint.options import (
    PUBLIC_TUNE_STEPS, TINY_TUNE_STEPS, TUNE_PHASE, UnipaintInpaintOptions, UnipaintOptions, UnipaintPaintOptions,
    UnipaintRemoveOptions,
)
from diffcompose.methods.unipaint.sampling import (
    Blend, apply_blends, background_blend, reads_prompt, stroke_blend, stroke_latent_mask, stroke_pixels,
)
from diffcompose.methods.unipaint.tuning import (
    Exemplar, TuneInputs, check_exemplar_region, latent_hole, region_box, tune_unet,
)
from diffcompose.models import codec
from diffcompose.models.device import make_generator
from diffcompose.models.loader import SDComponents, encode_prompts, load_sd, resolve_sd
from diffcompose.models.sampling import denoise, initial_noise, is_guided, make_scheduler
from diffcompose.progress import RunContext
from diffcompose.regions import WindowPolicy

log = logging.getLogger(__name__)

WAYS_OUT = "; pass --model DIR (a local SD 1.x text-to-image directory, or convert the public checkpoint: " \
           "diffcompose convert unipaint)"


class UnipaintEngine(DiffusionEngine):
    """Unconditional, text, stroke and exemplar inpainting on one tuned-per-photo SD (Yang et al., 2023)."""

    name = "unipaint"
    sd: SDComponents

    def _load(self) -> None:
        self._resolve_device()
        root = self.model_dir(lambda name: resolve_sd(name, hint=WAYS_OUT))
        self.sd = load_sd(root, self.device, self.dtype)
        if self.sd.unet.config.in_channels != self.sd.vae.config.latent_channels:
            raise InputError(f"{root} is not a text-to-image SD: its UNet takes {self.sd.unet.config.in_channels} "
                             "input channels (an inpainting model?); Uni-paint starts from a text-to-image one")

    def modules(self) -> list[torch.nn.Module]:
        return self.sd.modules + [clip for clip, _, _ in vars(self).get("_clip", {}).values()]

    def window_policy(self, task: str, options: UnipaintOptions) -> WindowPolicy:
        size = options.resolution or self.sd.resolution
        return WindowPolicy(size, codec.latent_multiple(self.sd.unet, self.sd.vae), context=options.context)

    # ------------------------------------------------------------------ tasks

    def _remove(self, *, image: np.ndarray, mask: np.ndarray, options: UnipaintRemoveOptions,
                ctx: RunContext) -> np.ndarray:
        """Unconditional fill: the empty prompt at guidance 1 (the public unconditional mode)."""
        return self._fill(image, mask, options, ctx, "remove", prompt="", negative="", scale=1.0, n=1)[0]

    def _inpaint(self, *, image: np.ndarray, mask: np.ndarray, prompt: str, negative_prompt: str,
                 options: UnipaintInpaintOptions, ctx: RunContext, stroke: np.ndarray | None = None
                 ) -> list[np.ndarray]:
        strokes = None
        if stroke is not None:
            colours, where = stroke_pixels(stroke, mask)
            if not where.any():
                raise InputError("the stroke image has no coloured pixel inside the region (black is no stroke)")
            strokes = (colours, where)
        return self._fill(image, mask, options, ctx, "inpaint", prompt=prompt, negative=negative_prompt,
                          scale=options.guidance_scale, n=options.num_images, stroke=strokes,
                          tau=options.stroke_start)

    def _paint(self, *, image: np.ndarray, mask: np.ndarray, reference: np.ndarray,
               reference_mask: np.ndarray | None, options: UnipaintPaintOptions, ctx: RunContext
               ) -> list[np.ndarray]:
        token = ex.placeholder_token(self.sd.tokenizer)
        embedding = self._start_embedding(reference, options)
        box = region_box(mask)
        check_exemplar_region(box)
        pixels = ex.exemplar_pixels(reference, reference_mask, (image.shape[1], image.shape[0]))
        context = ex.placeholder_context(self.sd, ex.PLACEHOLDER, token, embedding).float()
        exemplar = Exemplar(codec.images_to_tensor(pixels, self.device, torch.float32), box, context)
        return self._fill(image, mask, options, ctx, "paint", prompt=None, negative="", scale=options.guidance_scale,
                          n=options.num_images, exemplar=exemplar)

    def _start_embedding(self, reference: np.ndarray, options: UnipaintPaintOptions) -> torch.Tensor:
        """The placeholder's embedding: the word given, else the CLIP-matched token, else ``#``'s own."""
        if options.exemplar_word or not options.exemplar_clip:
            return ex.word_embedding(self.sd, options.exemplar_word or ex.PLACEHOLDER)
        cache = vars(self).setdefault("_clip", {})
        if options.exemplar_clip not in cache:  # the vocabulary's text embeddings: computed once per CLIP model
            clip, processor = ex.load_clip(options.exemplar_clip, self.device)
            tok = self.sd.tokenizer
            text = ex.token_text_embeddings(clip, len(tok) - 1, tok.bos_token_id, tok.eos_token_id)
            cache[options.exemplar_clip] = (clip, processor, text)
        clip, processor, text = cache[options.exemplar_clip]
        token = ex.match_token(clip, processor, reference, text)
        log.info("exemplar: start word %r (CLIP-matched)", self.sd.tokenizer.decode([token]))
        table = self.sd.text_encoder.get_input_embeddings()
        with torch.no_grad():
            return table(torch.tensor([token], device=table.weight.device))[0]

    # ------------------------------------------------------------------ the shared run

    def _tune_steps(self, options: UnipaintOptions) -> int:
        if options.tune_steps is not None:
            return options.tune_steps
        return TINY_TUNE_STEPS if self.sd.is_tiny else PUBLIC_TUNE_STEPS

    def _fill(self, image: np.ndarray, mask: np.ndarray, options: UnipaintOptions, ctx: RunContext, task: str, *,
              prompt: str | None, negative: str, scale: float, n: int,
              stroke: tuple[np.ndarray, np.ndarray] | None = None, tau: float = 0.0,
              exemplar: Exemplar | None = None) -> list[np.ndarray]:
        """Tune on the known region (and the exemplar), then sample; ``prompt=None``: the exemplar's prompt."""
        sd, dev, dt = self.sd, self.device, self.dtype
        gen = make_generator(ctx.seed)
        stride = codec.vae_stride(sd.vae)
        size = (image.shape[0] // stride, image.shape[1] // stride)
        hole_px = codec.mask_to_tensor(mask, dev, torch.float32)
        alphas = sd.scheduler.alphas_cumprod.to(torch.float32)
        with torch.no_grad():
            x = codec.images_to_tensor(image, dev, dt)
            z_known = codec.encode(sd.vae, x * (1 - hole_px).to(dt), gen).float()
            z_stroke = None
            if stroke is not None:
                z_stroke = codec.encode(sd.vae, codec.images_to_tensor(stroke[0], dev, dt), gen).float()
            null = encode_prompts(sd, [""]).float()
            cond = exemplar.context if prompt is None else encode_prompts(sd, [prompt]).float()
            uncond = encode_prompts(sd, [negative]).float()
        hole = latent_hole(hole_px, size)

        unet = sd.unet
        steps = self._tune_steps(options)
        ctx.check()  # a cancel before the tuning starts
        if steps > 0:
            def encode(pixels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
                with torch.no_grad():
                    return codec.encode(sd.vae, pixels.to(dt), g)
            inputs = TuneInputs(z_known, 1 - hole, null, alphas.to(dev), encode, exemplar)
            unet = tune_unet(sd.unet, inputs, steps=steps, learning_rate=options.learning_rate, ctx=ctx,
                             device=dev, dtype=dt, task=TUNE_PHASE).to(dt)

        blends = [background_blend(z_known.to(dt), hole.to(dt))]
        if z_stroke is not None:
            blends.append(stroke_blend(z_stroke.to(dt), stroke_latent_mask(stroke[1], size, dev, dt), tau))
        with torch.no_grad():
            latents = self._sample(unet, cond.to(dt), uncond.to(dt), blends, hole_px, size, options, ctx, task,
                                   scale=scale, n=n, tau=tau if stroke is not None else None, gen=gen, alphas=alphas)
            return codec.tensor_to_images(codec.decode(sd.vae, latents).clamp(-1, 1))

    def _sample(self, unet: Any, cond: torch.Tensor, uncond: torch.Tensor, blends: list[Blend],
                region: torch.Tensor, size: tuple[int, int], options: UnipaintOptions, ctx: RunContext, task: str,
                *, scale: float, n: int, tau: float | None, gen: torch.Generator, alphas: torch.Tensor
                ) -> torch.Tensor:
        sd, dev, dt = self.sd, self.device, self.dtype
        sched = make_scheduler("ddim", dict(sd.scheduler.config))
        sched.set_timesteps(options.steps, device=dev)
        timesteps = list(sched.timesteps)
        total = len(timesteps)
        position = {int(t): i for i, t in enumerate(timesteps)}
        guided = is_guided(scale, below_one=True)
        masks = RegionMasks(region[0, 0], size, active=guided and options.masked_attention)
        latents = initial_noise(sd.vae, n, size[0], size[1], gen).to(dev, dt)
        latents = apply_blends(latents, blends, total - 1, total, timesteps[0], alphas, gen)

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            index = total - 1 - position[int(t)]
            c = cond if reads_prompt(index, total, tau) else uncond
            context = torch.cat([uncond, c]) if guided else c
            return unet(x, t, encoder_hidden_states=context.repeat_interleave(n, dim=0)).sample

        def after_step(i: int, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
            if i + 1 >= total:
                return None  # nothing is blended after the last step
            return apply_blends(z, blends, total - 2 - i, total, timesteps[i + 1], alphas, gen)

        log.info("%s: %d DDIM steps at guidance %g (masked attention %s)", task, total, scale,
                 "on" if masks.active else "off")
        with masked_attention(unet, masks):
            return denoise(model, sched, latents, guidance_scale=scale, generator=gen, eta=options.eta,
                           progress=ctx.progress(task, total), guide_below_one=True, after_step=after_step,
                           preview=lambda z: codec.tensor_to_images(codec.decode(sd.vae, z[:1]))[0])
