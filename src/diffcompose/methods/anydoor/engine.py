"""The AnyDoor engine: insert a reference object into a target region, keeping its identity.

Per request (:meth:`AnyDoorEngine._insert`), with the published pre- and post-processing of
:mod:`.preprocess`:

1. ratios: the ones given, else drawn the published way from ``numpy.random.default_rng(seed)``
   (:func:`~.preprocess.draw_ratios`; the public scripts use the unseeded global state);
2. reference on white, cropped, padded, squared, at 224 (:func:`~.preprocess.prepare_reference`)
   -> ID tokens; the unconditional context = the extractor on an all-zeros image;
3. hint: scene crop around the expanded target box with the reference's high-frequency map
   stretched into the box, mask channel, padded to a square at the model's size (512 for the
   published model; :func:`~.preprocess.build_hint`);
4. DDIM (eta 0) on the shared loop, one batched ``[uncond, cond]`` call per step
   (:func:`~.model.guided_model_fn`), at the public sampler's timesteps
   (:func:`public_ddim_timesteps`: 30 steps run 31, from 991); noise from
   ``torch.Generator().manual_seed(seed)``;
5. decode, resize back, unpad, put the crop into the scene (less a 3 px margin, as the demo:
   this is what ``paste_back=False`` returns); the runner then restores the original pixels
   outside the expanded target box, with no seam (the demo's rule, :meth:`paste_region`), or
   with ``paste_rule="mask"`` outside the target region grown by the box expansion
   (:meth:`paste_band`) with a feathered seam.

The engine works on the whole image at its own pixels (its window policy): the crop, its
square padding and the 512 resize are AnyDoor's own, exactly as the model was trained.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import torch

from diffcompose.errors import InputError
from diffcompose.inputs import mask_to_box
from diffcompose.methods.anydoor import model as M
from diffcompose.methods.anydoor import preprocess as P
from diffcompose.methods.anydoor.options import AnyDoorInsertOptions
from diffcompose.methods.diffusion import DiffusionEngine
from diffcompose.methods.tasks import Job, get_task
from diffcompose.models import codec
from diffcompose.models.device import make_generator
from diffcompose.models.sampling import denoise, initial_noise, is_guided, make_scheduler
from diffcompose.progress import RunContext
from diffcompose.regions import WindowPolicy

log = logging.getLogger(__name__)

#: Guidance at every scale but exactly 1, as the public DDIM sampler (``scale == 1.``: one pass).
GUIDE_BELOW_ONE = True
#: A mask pixel is the object when its 8-bit level is above this (the public ``> 128``; the project's rule
#: takes 128 too).
OBJECT_LEVEL = 128
#: Pixels of the crop's border not taken from the result (the demo's ``crop_back`` margin).
CROP_MARGIN = 3
NO_WEIGHTS = ("no AnyDoor weights in diffusers layout are published: convert the public checkpoint "
              "(diffcompose convert anydoor CKPT DIR) and pass --model DIR, or --model tiny for a smoke test; "
              "or use --engine pbe or --engine classical")
_PATTERNS = ["model_index.json", "*/config.json", "scheduler/scheduler_config.json", "*/*.safetensors"]


def public_ddim_timesteps(steps: int, train_steps: int = 1000, what: str = "AnyDoor") -> np.ndarray:
    """The public DDIM sampler's timesteps in sampling order (``make_ddim_timesteps``, ``uniform``):
    every ``train_steps // steps``-th training step from 0, plus one. When ``steps`` does not
    divide ``train_steps`` that is more steps than asked: 30 gives 31, from 991 (diffusers'
    ``leading`` spacing gives 30, from 958). Where the first would be ``train_steps`` itself
    (27, 36, 37 steps, ...) the public sampler indexes past its schedule and fails: an
    :class:`InputError` naming a step count that works."""
    ts = _public_steps(steps, train_steps)
    if ts[0] >= train_steps:  # e.g. 27 steps: stride 37, 37 * 27 = 999, plus one = 1000
        ok = [n for n in (steps - 1, steps + 1, steps - 2, steps + 2)
              if n >= 1 and _public_steps(n, train_steps)[0] < train_steps]
        raise InputError(f"{what}'s DDIM schedule has no {steps}-step form: it would start at t={train_steps}, "
                         f"past the model's {train_steps} training steps (the public sampler fails there too); "
                         f"use --steps {ok[0]}")
    return ts


def _public_steps(steps: int, train_steps: int) -> np.ndarray:
    stride = max(1, train_steps // steps)
    return np.arange(0, train_steps, stride)[::-1] + 1


def public_ddim(config: dict, steps: int, device: torch.device | str = "cpu", what: str = "AnyDoor"):
    """A DDIM scheduler running :func:`public_ddim_timesteps`. Its ``num_inference_steps`` stays
    ``steps``, so each step's previous timestep is ``t - train_steps // steps``: the public
    sampler's previous DDIM timestep; the last step goes to ``alphas_cumprod[0]`` (the converted
    config's ``set_alpha_to_one=False``), as the public ``ddim_alphas_prev``."""
    sched = make_scheduler("ddim", config)
    sched.set_timesteps(steps, device=device)
    ts = public_ddim_timesteps(steps, int(sched.config.num_train_timesteps), what)
    sched.timesteps = torch.from_numpy(ts.copy()).to(device)
    return sched


def locate_anydoor(model: str):
    """A complete local AnyDoor directory for ``model`` (a directory or a hub id)."""
    from diffcompose.models.hub import resolve_model

    root = resolve_model(model, M.REQUIRED, what="AnyDoor model", allow_patterns=_PATTERNS, hint=M.WAYS_OUT)
    return M.check_anydoor_dir(root)


class AnyDoorEngine(DiffusionEngine):
    """Object teleport with identity preservation (Chen et al., CVPR 2024)."""

    name = "anydoor"
    m: M.AnyDoorModel

    def _load(self) -> None:
        self._resolve_device()
        root = self.model_dir(locate_anydoor, missing=NO_WEIGHTS)
        self.m = M.load_anydoor(root, self.device, self.dtype)

    @classmethod
    def from_model(cls, model: M.AnyDoorModel, device: str = "cpu", dtype: torch.dtype = torch.float32
                   ) -> "AnyDoorEngine":
        """A loaded engine over a model already in memory (tests, benchmarks, a training run's model)."""
        engine = cls(device=device, dtype=str(dtype).replace("torch.", ""))
        engine.device, engine.dtype, engine.m, engine._loaded = torch.device(device), dtype, model, True
        return engine

    def modules(self) -> list[torch.nn.Module]:
        return self.m.parts()

    def read(self, job: Job) -> Job:
        """AnyDoor reads its inputs as the public code: a mask pixel is the object only when its 8-bit
        level is above 128 (``mask > 128``), and a transparent reference is its colour *as stored*
        with its alpha (``> 128``) as the reference mask, not the colour put on white (the public
        scripts drop the alpha channel and cut the object with the binary mask). From
        ``job.readings``; the paste mask follows the same reading."""
        if job.task != "insert" or not job.readings:
            return job
        arrays, levels = dict(job.arrays), job.readings
        for key in ("mask", "shape_mask", "reference_mask"):
            if key in levels and arrays.get(key) is not None:
                arrays[key] = np.rint(levels[key] * 255.0) > OBJECT_LEVEL
        if "reference_rgb" in levels:
            arrays["reference"] = levels["reference_rgb"]
        mask, shape = arrays["mask"], arrays.get("shape_mask")
        if not mask.any():
            raise InputError(f"the target mask has no pixel above {OBJECT_LEVEL} (of 255): AnyDoor reads "
                             "only those as the region")
        paste = mask if shape is None else mask | shape
        return dataclasses.replace(job, arrays=arrays, paste_mask=paste, region=mask_to_box(paste))

    def window_policy(self, task: str, options: AnyDoorInsertOptions) -> WindowPolicy:
        return WindowPolicy(size=None, whole_image=True)  # the engine crops as AnyDoor was trained

    def paste_band(self, task: str, options: AnyDoorInsertOptions, mask: np.ndarray) -> int:
        """``paste_rule="mask"``: the target box expansion, what the model redraws around the region
        (its mask channel covers the expanded box); kept within the expanded box on every side."""
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return 0
        side = min(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
        ratio = options.box_ratio or P.default_box_ratio(options.ratios)
        return max(0, int(math.floor((ratio - 1.0) / 2.0 * side)) - 1)

    def paste_region(self, task: str, options: AnyDoorInsertOptions, mask: np.ndarray
                     ) -> tuple[np.ndarray, int | None]:
        """``paste_rule="box"`` (default): the public demo's "keep background unchanged": the whole
        expanded target box comes from the result and nothing outside it (no seam), so an object
        drawn wider than the user's silhouette is not cut at it. ``"mask"``: the runner's rule
        (:meth:`paste_band`, feathered seam)."""
        if options.paste_rule == "mask":
            return super().paste_region(task, options, mask)
        y1, y2, x1, x2 = P.target_box(mask, options.box_ratio or P.default_box_ratio(options.ratios), mask.shape)
        keep = np.zeros(mask.shape, bool)
        keep[y1:y2, x1:x2] = True
        return keep, 0

    def native_size(self) -> int:
        return codec.native_resolution(self.m.unet, self.m.vae)

    @torch.no_grad()
    def _insert(self, *, image: np.ndarray, mask: np.ndarray, reference: np.ndarray,
                reference_mask: np.ndarray | None, shape_mask: np.ndarray | None, options: AnyDoorInsertOptions,
                ctx: RunContext) -> list[np.ndarray]:
        if reference_mask is None:
            raise InputError(f"the anydoor engine needs {get_task('insert').param('reference_mask').named} (white = "
                             "the object in the reference; or a reference with a transparent background): its "
                             "background is set to white")
        # the public box rule takes a mask of fewer pixels for the whole image: refuse instead
        if np.count_nonzero(reference_mask) < P.MIN_MASK_PIXELS:
            raise InputError(f"the reference mask marks fewer than {P.MIN_MASK_PIXELS} pixels: it must mark "
                             "the object in the reference")
        if np.count_nonzero(mask) < P.MIN_MASK_PIXELS:
            raise InputError(f"the target region covers fewer than {P.MIN_MASK_PIXELS} pixels")
        m, dev, dt, n = self.m, self.device, self.dtype, options.num_images
        drawn = P.draw_ratios(np.random.default_rng(ctx.seed), options.ratios)
        ratios = P.Ratios(options.reference_ratio or drawn.reference, options.box_ratio or drawn.box,
                          options.crop_ratio or drawn.crop)
        ref = P.prepare_reference(reference, reference_mask, ratio=ratios.reference)
        size = self.native_size()
        hint = P.build_hint(image, mask, ref.hf_map, box_ratio=ratios.box, crop_ratio=ratios.crop,
                            shape_mask=shape_mask, size=size, mask_padding=options.mask_padding)
        log.info("anydoor: crop %s, target box %s, ratios %s, %d steps", hint.crop_box, hint.target_box, ratios,
                 options.steps)
        generator = make_generator(ctx.seed)
        guided = is_guided(options.guidance_scale, below_one=GUIDE_BELOW_ONE)
        hint_t = torch.from_numpy(hint.hint).permute(2, 0, 1)[None].to(dev, dt).expand(n, -1, -1, -1)
        with M.Offload(m, dev, options.cpu_offload) as off:
            M.set_attention_slicing(m, options.attention_slicing)
            with off.stage(m.id_extractor):
                cond = m.id_extractor(M.reference_to_tensor(ref.image, dev)).to(dt).expand(n, -1, -1)
                uncond = m.id_extractor.uncond(1, dev).to(dt).expand(n, -1, -1) if guided else None
            sched = public_ddim(m.scheduler_config, options.steps, dev)
            stride = codec.vae_stride(m.vae)
            latents = initial_noise(m.vae, n, size // stride, size // stride, generator).to(dev, dt)
            latents = latents * sched.init_noise_sigma
            fn = M.guided_model_fn(m, hint_t, cond, uncond, options.control_strength)
            preview = None
            if off.mode == "none":
                def preview(z: torch.Tensor) -> np.ndarray:
                    return codec.tensor_to_images(codec.decode(m.vae, z[:1]))[0]
            with off.stage(m.controlnet, m.unet):
                latents = denoise(fn, sched, latents, guidance_scale=options.guidance_scale, generator=generator,
                                  guide_below_one=GUIDE_BELOW_ONE, eta=0.0,
                                  progress=ctx.progress("insert", len(sched.timesteps)), preview=preview)
            with off.stage(m.vae):
                samples = codec.tensor_to_images(codec.decode(m.vae, latents).clamp(-1, 1))
            if options.attention_slicing:
                M.set_attention_slicing(m, False)
        whole_crop = dataclasses.replace(hint, target_box=hint.crop_box)  # the runner keeps only the region
        return [P.paste_result(s, image, whole_crop, margin=CROP_MARGIN) for s in samples]
