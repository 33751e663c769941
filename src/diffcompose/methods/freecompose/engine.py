"""The FreeCompose engine: the three tasks on one loaded Stable Diffusion.

The runner hands each task its window already at the working size (about the model's
resolution, the window's own aspect ratio, never upsampled beyond the source, mirrored past
the photo's edge up to the UNet's stride where the window cannot grow; see
:meth:`FreeComposeEngine.window_policy` and :func:`diffcompose.regions.plan_window`) and puts
the result back; outside the region the original pixels come back there too. The VGG16 of the
perceptual loss and the T2I-Adapters load on first use and stay with the engine.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from diffcompose.attention import AttentionEdit, self_attention_layers
from diffcompose.errors import InputError
from diffcompose.inputs import Box, mask_to_box, resize_mask
from diffcompose.methods.diffusion import DiffusionEngine
from diffcompose.methods.freecompose import dds
from diffcompose.methods.freecompose.options import FINAL_T_MIN, ComposeOptions, HarmonizeOptions, RemoveOptions
from diffcompose.methods.options import option_named
from diffcompose.methods.freecompose.perceptual import MaskedPerceptual
from diffcompose.methods.tasks import get_task
from diffcompose.models import codec
from diffcompose.models.device import make_generator
from diffcompose.models.loader import SDComponents, load_adapter, load_sd, load_vgg, resolve_sd
from diffcompose.models.lpips import find_heads, load_heads
from diffcompose.models.vgg import DEFAULT_VGG
from diffcompose.progress import RunContext
from diffcompose.regions import Window, WindowPolicy, default_margin, plan_window

log = logging.getLogger(__name__)

DEFAULT_ADAPTERS = {"canny": "TencentARC/t2iadapter_canny_sd15v2", "sketch": "TencentARC/t2iadapter_sketch_sd15v2"}


#: With an empty prompt all four DDS rows share one text and guidance does nothing.
DEFAULT_COMPOSE_PROMPT = "A photo of an object."
#: Condition maps are binarised at this level (the public code's 100/255).
CONDITION_THRESHOLD = 100 / 255


@dataclass(frozen=True)
class BandWindow(WindowPolicy):
    """The window reaches past the region by the free band and the default seam, at least.

    The runner restores the original pixels outside ``band`` x the region's height plus a
    seam; the window's context alone (a share of the region's size) can be narrower: for a
    300x500 object in a 1920x1080 photo, remove's 500-px band reached 225 px past the window
    at 0.75 context, and that part of the band kept the original pixels behind an unfeathered
    edge. So the window grows to hold the band and the seam (1% of the photo's long side;
    a wider ``--margin`` than that may still reach past it).
    """

    band: float = 0.0

    def plan(self, image_size: tuple[int, int], region: Box) -> Window:
        reach = int(round(self.band * region.height)) + default_margin((image_size[1], image_size[0]))
        return plan_window(image_size, region, context=self.context, min_context=max(self.min_context, reach),
                           resolution=self.size, multiple=self.multiple, square=self.square)


def binarise(condition: np.ndarray) -> np.ndarray:
    return (condition > CONDITION_THRESHOLD).astype(np.float32)


def canny(image: np.ndarray, low: int, high: int) -> np.ndarray:
    """OpenCV canny edges of an RGB image as a float map in {0, 1}."""
    return (cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), low, high) > 0).astype(np.float32)


class FreeComposeEngine(DiffusionEngine):
    """FreeCompose (ECCV 2024): training-free removal, harmonization and composition with DDS."""

    name = "freecompose"
    sd: SDComponents

    def _load(self) -> None:
        self._resolve_device()
        root = self.model_dir(resolve_sd)
        self.sd = load_sd(root, self.device, self.dtype)
        self._extras: dict[tuple[str, str], Any] = {}
        if self.sd.is_tiny and self.model != "tiny":
            log.warning("%s is a tiny random model: the output is noise", root)
        log.info("freecompose: %s on %s (%s)", root, self.device, str(self.dtype).replace("torch.", ""))

    def modules(self) -> list[torch.nn.Module]:
        extras = [m for m in self._extras.values() if isinstance(m, torch.nn.Module)]
        return self.sd.modules + extras

    def _extra(self, kind: str, source: str, build: Callable[[], Any]) -> Any:
        """A network loaded on first use (VGG16, an adapter), kept with the engine."""
        if (kind, source) not in self._extras:
            self._extras[(kind, source)] = build()
        return self._extras[(kind, source)]

    def window_policy(self, task: str, options: Any) -> WindowPolicy:
        size = options.resolution or self.sd.resolution
        stride = codec.latent_multiple(self.sd.unet, self.sd.vae)
        return BandWindow(size, stride, context=options.context, band=options.band)

    def paste_band(self, task: str, options: Any, mask: np.ndarray) -> int:
        """``--band`` x the object's height: what removal and harmonization exist to change around it."""
        return int(round(options.band * mask_to_box(mask).height))

    # ------------------------------------------------------------------ helpers

    def _perceptual(self, source: str | None) -> tuple[torch.nn.Module, list[torch.Tensor]]:
        """VGG16 features and LPIPS's channel weights for them (float32)."""
        if source is None:
            source = str(self.sd.root / "vgg") if (self.sd.root / "vgg").is_dir() else DEFAULT_VGG
        vgg = self._extra("vgg", source, lambda: load_vgg(source, self.device, torch.float32))
        local = Path(source) if Path(source).is_dir() else None
        heads = self._extra("lpips", source, lambda: load_heads(find_heads(local), vgg.widths))
        return vgg, heads

    def _decode32(self, z: torch.Tensor) -> torch.Tensor:
        """Decode in float32 with autograd (the perceptual gradients are far below fp16's resolution)."""
        if self.dtype == torch.float32:
            vae = self.sd.vae
        else:
            vae = self._extra("vae32", "decoder", lambda: copy.deepcopy(self.sd.vae).float())
        return (codec.decode(vae, z.float()).float() + 1.0) / 2.0

    def _adapter(self, options: ComposeOptions, condition_type: str) -> Any:
        source = options.adapter
        if source is None:
            local = self.sd.root / f"t2i_adapter_{condition_type}"
            source = str(local) if local.is_dir() else DEFAULT_ADAPTERS[condition_type]
        return self._extra("adapter", source, lambda: load_adapter(source, self.device, self.dtype))

    def _check_layer(self, layer: int) -> None:
        n = len(self_attention_layers(self.sd.unet))
        if layer >= n:
            raise InputError(f"{option_named('attn_layer')} must be below {n} (this UNet has {n} self-attention "
                             f"layers), got {layer}")

    def _image01(self, image: np.ndarray) -> torch.Tensor:
        return (codec.images_to_tensor(image, self.device) + 1.0) / 2.0

    def _latent_map(self, mask: np.ndarray, z: torch.Tensor) -> torch.Tensor:
        """Soft coverage of a working-size mask on the latent grid, (h, w) float32."""
        h, w = z.shape[-2:]
        return torch.from_numpy(resize_mask(mask, (w, h), soft=True)).to(z.device)

    def _finish(self, z: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return dds.to_uint8(dds.decode_latent(self.sd, z))

    @staticmethod
    def _config(opts: Any, t_range: Any, weight_map: torch.Tensor | None = None) -> dds.DDSConfig:
        return dds.DDSConfig(iterations=opts.iterations, guidance=opts.guidance, lr=opts.lr, optimizer=opts.optimizer,
                             t_range=t_range, weight_map=weight_map)

    # ------------------------------------------------------------------ tasks

    def _remove(self, *, image: np.ndarray, mask: np.ndarray, options: RemoveOptions, ctx: RunContext) -> np.ndarray:
        """Object removal: DDS toward "Some place" with masked self-attention in the target rows."""
        sd = self.sd
        self._check_layer(options.attn_layer)
        z_src = dds.encode_image(sd, image)
        m_lat = self._latent_map(mask, z_src)
        weight = (m_lat + options.background_weight * (1 - m_lat))[None, None]
        branches = dds.Branches(dds.encode_prompts(sd, ["", "", options.source_prompt, options.target_prompt]))
        attention = AttentionEdit("mask", tuple(z_src.shape[-2:]), mask=torch.from_numpy(mask.astype(np.float32)),
                                  min_layer=options.attn_layer, start_iter=options.attn_start)
        losses = []
        if options.perceptual_weight > 0:
            vgg, heads = self._perceptual(options.perceptual_model)
            keep = 1 - codec.mask_to_tensor(mask, self.device)
            losses.append((options.perceptual_weight, MaskedPerceptual(vgg, heads, self._image01(image), keep)))
        cfg = self._config(options, lambda i: (options.t_min, options.t_max), weight)
        z = dds.optimise(sd, z_src, branches, cfg, make_generator(ctx.seed),
                         progress=ctx.progress("remove", cfg.iterations),
                         losses=losses, attention=attention, decode=self._decode32)
        return self._finish(z)

    def _harmonize(self, *, image: np.ndarray, mask: np.ndarray, background: np.ndarray | None,
                   options: HarmonizeOptions, ctx: RunContext) -> np.ndarray:
        """Harmonization: DDS from "" toward "A harmonious scene." with perceptual anchors on both regions."""
        sd = self.sd
        z_src = dds.encode_image(sd, image)
        branches = dds.Branches(dds.encode_prompts(sd, ["", "", options.source_prompt, options.target_prompt]))
        losses = []
        if options.background_weight > 0 or options.object_weight > 0:
            vgg, heads = self._perceptual(options.perceptual_model)
            inside = codec.mask_to_tensor(mask, self.device)
            bg_ref = self._image01(background if background is not None else image)
            if options.background_weight > 0:
                losses.append((options.background_weight, MaskedPerceptual(vgg, heads, bg_ref, 1 - inside)))
            if options.object_weight > 0:
                losses.append((options.object_weight, MaskedPerceptual(vgg, heads, self._image01(image), inside)))
        cfg = self._config(options, lambda i: (options.t_min, options.t_max))
        z = dds.optimise(sd, z_src, branches, cfg, make_generator(ctx.seed),
                         progress=ctx.progress("harmonize", cfg.iterations), losses=losses, decode=self._decode32)
        return self._finish(z)

    @torch.no_grad()
    def _adapter_features(self, adapter: Any, maps: list[np.ndarray], scale: float) -> list[torch.Tensor]:
        """Adapter features of [orig, edit], laid out as the DDS batch [orig, edit, orig, edit], scaled."""
        x = torch.from_numpy(np.stack(maps))[:, None].to(device=self.device, dtype=self.dtype)
        channels = int(adapter.config.in_channels)
        if channels != 1:
            x = x.expand(-1, channels, -1, -1)
        return [torch.cat([f, f]) * scale for f in adapter(x)]

    def _compose(self, *, image: np.ndarray, edited_condition: np.ndarray, condition: np.ndarray | None,
                 condition_type: str, mask: np.ndarray | None, prompt: str, options: ComposeOptions,
                 ctx: RunContext) -> np.ndarray:
        """Semantic composition: T2I-Adapter features of the original/edited condition + K/V injection."""
        if condition is None:
            if condition_type != "canny":
                spec = get_task("compose")
                raise InputError(f"{spec.param('condition').named} is required for "
                                 f"{spec.param('condition_type').named} {condition_type} (only canny can be computed "
                                 "here)")
            condition = canny(image, options.canny_low, options.canny_high)  # on the working-size image
        # Binary maps at the working size, as the adapters saw in training (the public code: > 100/255).
        condition, edited_condition = (binarise(c) for c in (condition, edited_condition))
        if not prompt:
            prompt = DEFAULT_COMPOSE_PROMPT
            log.info("compose: no --prompt given, using %r (describe the object for a better result)", prompt)
        lo, hi = options.t_range(condition_type)
        sd = self.sd
        self._check_layer(options.attn_layer)
        adapter = self._adapter(options, condition_type)
        z_src = dds.encode_image(sd, image)
        target = options.target_prompt if options.target_prompt is not None else prompt
        features = self._adapter_features(adapter, [condition, edited_condition], options.adapter_scale)
        branches = dds.Branches(dds.encode_prompts(sd, ["", "", prompt, target]), features)
        attention = AttentionEdit("inject", tuple(z_src.shape[-2:]), min_layer=options.attn_layer,
                                  start_iter=options.attn_start,
                                  t_min=options.inject_t_min + 1 if options.inject_t_min > 0 else 0)
        last = options.iterations - options.final_iters
        cfg = self._config(options, lambda i: (lo, hi) if i < last else (FINAL_T_MIN, options.final_t_max))
        z = dds.optimise(sd, z_src, branches, cfg, make_generator(ctx.seed),
                         progress=ctx.progress("compose", cfg.iterations), attention=attention)
        return self._finish(z)
