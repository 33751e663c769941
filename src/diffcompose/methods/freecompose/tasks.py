"""The three FreeCompose tasks as engine functions (see :mod:`diffcompose.methods.registry`).

Each crops a window around the region (any image size and aspect ratio), works there at
the model's resolution in multiples of 64 pixels, and puts the window back; the API then
pastes the original pixels back outside the region.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from diffcompose.attention import AttentionEdit, self_attention_layers
from diffcompose.errors import InputError
from diffcompose.inputs import Box, mask_to_box, resize_mask
from diffcompose.methods.freecompose import dds
from diffcompose.methods.freecompose.options import FINAL_T_MIN, ComposeOptions, HarmonizeOptions, RemoveOptions
from diffcompose.methods.freecompose.perceptual import MaskedPerceptual
from diffcompose.methods.registry import Runtime
from diffcompose.models.device import make_generator, pick_device, pick_dtype
from diffcompose.models.loader import SDComponents, load_adapter, load_sd, load_vgg, resolve_sd
from diffcompose.models.vgg import DEFAULT_VGG
from diffcompose.regions import Window, plan_window

log = logging.getLogger(__name__)

DEFAULT_ADAPTERS = {"canny": "TencentARC/t2iadapter_canny_sd15v2", "sketch": "TencentARC/t2iadapter_sketch_sd15v2"}


@dataclass
class Work:
    """A task's model and working window."""

    sd: SDComponents
    window: Window
    image: np.ndarray  # uint8 window at the working size
    generator: torch.Generator

    def mask(self, mask: np.ndarray) -> np.ndarray:
        return self.window.crop_mask(mask)

    def latent_map(self, work_mask: np.ndarray, z: torch.Tensor) -> torch.Tensor:
        """Soft coverage of a working-size mask on the latent grid, (h, w) float32."""
        h, w = z.shape[-2:]
        return torch.from_numpy(resize_mask(work_mask, (w, h), soft=True)).to(z.device)

    def pixel_map(self, work_mask: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(work_mask.astype(np.float32))[None, None].to(self.sd.device)

    def image01(self, image: np.ndarray | None = None) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(self.image if image is None else image)).permute(2, 0, 1)
        return (x[None].float() / 255.0).to(self.sd.device)

    def finish(self, z: torch.Tensor, full: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = dds.to_uint8(dds.decode_latent(self.sd, z))
        return self.window.uncrop(out, full)


def _prepare(image: np.ndarray, region: Box, opts: Any, runtime: Runtime) -> Work:
    device = pick_device(runtime.device)
    dtype = pick_dtype(device, runtime.dtype)
    root = resolve_sd(runtime.model)
    sd = load_sd(root, device, dtype)
    if sd.is_tiny and runtime.model != "tiny":
        log.warning("%s is a tiny random model: the output is noise", root)
    size = opts.resolution or sd.resolution
    window = plan_window((image.shape[1], image.shape[0]), region, context=opts.context, resolution=size, multiple=64)
    log.info("working on %s at %dx%d on %s (%s)", window.box, *window.work_size, device, str(dtype).replace("torch.", ""))
    return Work(sd, window, window.crop(image), make_generator(runtime.seed))


def _config(opts: Any, t_range: Any, weight_map: torch.Tensor | None = None) -> dds.DDSConfig:
    return dds.DDSConfig(iterations=opts.iterations, guidance=opts.guidance, lr=opts.lr, optimizer=opts.optimizer,
                         t_range=t_range, weight_map=weight_map)


def _check_layer(sd: SDComponents, layer: int) -> None:
    n = len(self_attention_layers(sd.unet))
    if layer >= n:
        raise InputError(f"--attn-layer must be below {n} (this UNet has {n} self-attention layers), got {layer}")


def _vgg(source: str | None, sd: SDComponents) -> torch.nn.Module:
    if source is None:
        source = str(sd.root / "vgg") if (sd.root / "vgg").is_dir() else DEFAULT_VGG
    return load_vgg(source, sd.device, torch.float32)


def remove(*, image: np.ndarray, mask: np.ndarray, options: RemoveOptions, runtime: Runtime) -> np.ndarray:
    """Object removal: DDS toward "Some place" with masked self-attention in the target rows."""
    work = _prepare(image, mask_to_box(mask), options, runtime)
    sd = work.sd
    _check_layer(sd, options.attn_layer)
    m = work.mask(mask)
    z_src = dds.encode_image(sd, work.image)
    m_lat = work.latent_map(m, z_src)
    weight = (m_lat + options.background_weight * (1 - m_lat))[None, None]
    branches = dds.Branches(dds.encode_prompts(sd, ["", "", options.source_prompt, options.target_prompt]))
    attention = AttentionEdit("mask", tuple(z_src.shape[-2:]), mask=m_lat, min_layer=options.attn_layer,
                              start_iter=options.attn_start)
    losses = []
    if options.perceptual_weight > 0:
        per = MaskedPerceptual(_vgg(options.perceptual_model, sd), work.image01(), 1 - work.pixel_map(m))
        losses.append((options.perceptual_weight, per))
    cfg = _config(options, lambda i: (options.t_min, options.t_max), weight)
    z = dds.optimise(sd, z_src, branches, cfg, work.generator, losses=losses, attention=attention,
                     progress=runtime.progress, callback=runtime.callback)
    return work.finish(z, image)


def harmonize(*, image: np.ndarray, mask: np.ndarray, background: np.ndarray | None, options: HarmonizeOptions,
              runtime: Runtime) -> np.ndarray:
    """Harmonization: DDS from "" toward "A harmonious scene." with perceptual anchors on both regions."""
    work = _prepare(image, mask_to_box(mask), options, runtime)
    sd = work.sd
    m = work.mask(mask)
    z_src = dds.encode_image(sd, work.image)
    branches = dds.Branches(dds.encode_prompts(sd, ["", "", options.source_prompt, options.target_prompt]))
    losses = []
    if options.background_weight > 0 or options.object_weight > 0:
        vgg = _vgg(options.perceptual_model, sd)
        inside = work.pixel_map(m)
        bg_ref = work.image01(work.window.crop(background) if background is not None else None)
        if options.background_weight > 0:
            losses.append((options.background_weight, MaskedPerceptual(vgg, bg_ref, 1 - inside)))
        if options.object_weight > 0:
            losses.append((options.object_weight, MaskedPerceptual(vgg, work.image01(), inside)))
    cfg = _config(options, lambda i: (options.t_min, options.t_max))
    z = dds.optimise(sd, z_src, branches, cfg, work.generator, losses=losses, progress=runtime.progress,
                     callback=runtime.callback)
    return work.finish(z, image)


def canny(image: np.ndarray, low: int, high: int) -> np.ndarray:
    """OpenCV canny edges of an RGB image as a float map in {0, 1}."""
    return (cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), low, high) > 0).astype(np.float32)


def _adapter_source(options: ComposeOptions, condition_type: str, sd: SDComponents) -> str:
    if options.adapter is not None:
        return options.adapter
    local = sd.root / f"t2i_adapter_{condition_type}"
    return str(local) if local.is_dir() else DEFAULT_ADAPTERS[condition_type]


@torch.no_grad()
def _adapter_features(adapter: Any, maps: list[np.ndarray], scale: float, sd: SDComponents) -> list[torch.Tensor]:
    """Adapter features of [orig, edit], laid out as the DDS batch [orig, edit, orig, edit], scaled."""
    x = torch.from_numpy(np.stack(maps))[:, None].to(device=sd.device, dtype=sd.dtype)
    channels = int(adapter.config.in_channels)
    if channels != 1:
        x = x.expand(-1, channels, -1, -1)
    return [torch.cat([f, f]) * scale for f in adapter(x)]


def compose(*, image: np.ndarray, edited_condition: np.ndarray, condition: np.ndarray | None,
            condition_type: str, mask: np.ndarray | None, prompt: str, options: ComposeOptions,
            runtime: Runtime) -> np.ndarray:
    """Semantic composition: T2I-Adapter features of the original/edited condition + K/V injection."""
    if condition is None:
        if condition_type != "canny":
            raise InputError(f"--condition is required for --condition-type {condition_type} "
                             "(only canny can be computed here)")
        condition = canny(image, options.canny_low, options.canny_high)
    lo, hi = options.t_range(condition_type)
    region = mask_to_box(mask) if mask is not None else Box(0, 0, image.shape[1], image.shape[0])
    work = _prepare(image, region, options, runtime)
    sd = work.sd
    _check_layer(sd, options.attn_layer)
    adapter = load_adapter(_adapter_source(options, condition_type, sd), sd.device, sd.dtype)
    maps = [work.window.crop_mask(c, soft=True) for c in (condition, edited_condition)]
    z_src = dds.encode_image(sd, work.image)
    target = options.target_prompt if options.target_prompt is not None else prompt
    features = _adapter_features(adapter, maps, options.adapter_scale, sd)
    branches = dds.Branches(dds.encode_prompts(sd, ["", "", prompt, target]), features)
    attention = AttentionEdit("inject", tuple(z_src.shape[-2:]), min_layer=options.attn_layer,
                              start_iter=options.attn_start,
                              t_min=options.inject_t_min + 1 if options.inject_t_min > 0 else 0)
    last = options.iterations - options.final_iters
    cfg = _config(options, lambda i: (lo, hi) if i < last else (FINAL_T_MIN, options.final_t_max))
    z = dds.optimise(sd, z_src, branches, cfg, work.generator, attention=attention, progress=runtime.progress,
                     callback=runtime.callback)
    return work.finish(z, image)
