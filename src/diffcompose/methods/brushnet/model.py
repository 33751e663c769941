"""The BrushNet branch, and the frozen base UNet run with the branch's residuals added.

BrushNet (Ju et al., ECCV 2024) keeps a Stable Diffusion UNet frozen and trains a second,
UNet-shaped network beside it. What this module implements (each point read from the public
code, TencentARC/BrushNet ``models/brushnet.py`` and its forked ``unet_2d_condition.py``):

* **Input**: one 3x3 convolution ``conv_in_condition`` over ``[noisy latent (4), masked-image
  latent (4), mask (1)]``, in that order (9 channels). The mask channel is **1 = keep, 0 =
  hole** (the public pipeline thresholds its normalised mask image as ``sum < 0``, i.e. black
  = 1), nearest-downsampled to the latent size; the masked image has its hole painted *black*
  (pixel 0, so -1 in the VAE's [-1, 1]). :func:`brushnet_conditioning` builds the last five
  channels from a hole mask, so no caller flips the polarity by hand.
* **Body**: the UNet's down blocks, mid block and up blocks (the up blocks read the branch's
  own down-path skips, as in a UNet). Built from a base UNet's config by
  :meth:`BrushNetModel.from_unet`.
* **Outputs**: every intermediate feature map goes through its own 1x1 convolution, zero at
  initialisation (so a fresh branch changes nothing): one for ``conv_in``'s output, one per
  resnet (or resnet + attention) layer and one per down/upsampler. For SD-1.5's geometry that
  is 12 down, 1 mid and 15 up residuals. Each is multiplied by ``conditioning_scale``.
* **Where they are added** (:func:`unet_with_residuals`): down residual 0 to the base UNet's
  ``conv_in`` output (after that output was kept as the first skip connection, so that skip
  does *not* carry it), then one after each down layer and each downsampler (these sums are
  the skips); the mid residual after the mid block; the up residuals after each up layer and
  each upsampler. Unlike ControlNet, the up path is fed too.

**Two variants, one class.** TencentARC's BrushNet has no attention at all in the branch
(``DownBlock2D`` x4, a two-resnet mid block, ``UpBlock2D`` x4; the text embeddings are
ignored). PowerPaint v2 (``BrushNet_CA.py``) is the same network with SD's cross-attention
blocks (``CrossAttnDownBlock2D`` x3 + ``DownBlock2D``, ``UNetMidBlock2DCrossAttn``,
``UpBlock2D`` + ``CrossAttnUpBlock2D`` x3): the same input, zero convolutions, residual
placement and scaling. The block types are ordinary config entries, so one class holds both;
``from_unet(..., cross_attention=True)`` picks the base UNet's own (attention) block types,
``False`` the attention-free ones, and :attr:`BrushNetModel.has_cross_attention` says which a
loaded model is. A branch without cross-attention gives the same residuals for every prompt,
which the engine uses to run it once for both halves of classifier-free guidance.

Interface (also used by PowerPaint v2)::

    branch = BrushNetModel.from_unet(unet.config, cross_attention=False)   # or from_pretrained(dir)
    cond = brushnet_conditioning(masked_latent, hole_latent_mask)         # (N, 5, h, w)
    res = branch(noisy, t, text_embeddings, cond, conditioning_scale=1.0)  # BrushNetResiduals
    eps = unet_with_residuals(unet, noisy, t, text_embeddings, res)

Not supported (refused when a config asks): class/addition embeddings (SDXL's BrushNet),
``global_pool_conditions`` and the public ``guess_mode`` (log-spaced scales).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block, get_mid_block, get_up_block
from torch import nn

log = logging.getLogger(__name__)

#: Latent channels of the conditioning: masked-image latent (4) + keep mask (1).
CONDITIONING_CHANNELS = 5
#: Block types of the attention-free branch (TencentARC's BrushNet).
PLAIN_DOWN, PLAIN_MID, PLAIN_UP = "DownBlock2D", "MidBlock2D", "UpBlock2D"
#: Config entries the public configs carry that this module reads only to refuse what it does not do.
_UNSUPPORTED_UNLESS_NONE = ("class_embed_type", "num_class_embeds", "addition_embed_type", "encoder_hid_dim",
                            "encoder_hid_dim_type")


@dataclass
class BrushNetResiduals:
    """What the branch adds to the base UNet: ``down`` (one per down feature, conv_in's first),
    ``mid`` and ``up`` (one per up feature), already multiplied by the conditioning scale."""

    down: list[torch.Tensor]
    mid: torch.Tensor
    up: list[torch.Tensor]

    def repeat(self, times: int) -> "BrushNetResiduals":
        """The residuals for a batch ``times`` as long (each tensor repeated along the batch): one
        branch pass serving both halves of guided sampling when the branch ignores the text."""
        if times == 1:
            return self
        return BrushNetResiduals([d.repeat(times, 1, 1, 1) for d in self.down], self.mid.repeat(times, 1, 1, 1),
                                 [u.repeat(times, 1, 1, 1) for u in self.up])

    def scaled(self, scale: float) -> "BrushNetResiduals":
        return BrushNetResiduals([d * scale for d in self.down], self.mid * scale, [u * scale for u in self.up])


def brushnet_conditioning(masked_latent: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """The branch's 5 conditioning channels ``[masked-image latent, keep mask]`` from ``hole``
    (``(N, 1, h, w)`` at latent size, 1 = paint here): the mask channel is ``1 - hole`` (BrushNet's
    polarity, see the module docstring)."""
    if hole.shape[-2:] != masked_latent.shape[-2:]:
        raise ValueError(f"hole mask {tuple(hole.shape[-2:])} and masked latent {tuple(masked_latent.shape[-2:])} "
                         "differ in size")
    keep = (1 - hole).to(masked_latent.dtype)
    if keep.shape[0] != masked_latent.shape[0]:
        keep = keep.expand(masked_latent.shape[0], -1, -1, -1)
    return torch.cat([masked_latent, keep], dim=1)


def _zero_conv(channels: int) -> nn.Conv2d:
    """A 1x1 convolution whose weight and bias start at zero: a new branch adds nothing yet."""
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _per_block(value: Any, n: int) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def _has_attention(block: nn.Module) -> bool:
    return bool(getattr(block, "has_cross_attention", False))


def config_from_unet(unet_config: Any, *, cross_attention: bool = False) -> dict[str, Any]:
    """The branch config for a base UNet's config (a diffusers UNet config or dict), as the public
    ``from_unet`` derives it: ``cross_attention=False`` gives TencentARC's BrushNet (attention-free
    blocks), ``True`` PowerPaint v2's ``BrushNet_CA`` (the UNet's own block types)."""
    c = dict(unet_config)
    n = len(c["block_out_channels"])
    if cross_attention:
        down, mid, up = list(c["down_block_types"]), c.get("mid_block_type") or "UNetMidBlock2DCrossAttn", \
            list(c["up_block_types"])
    else:
        down, mid, up = [PLAIN_DOWN] * n, PLAIN_MID, [PLAIN_UP] * n
    return dict(
        in_channels=c["in_channels"], conditioning_channels=CONDITIONING_CHANNELS,
        flip_sin_to_cos=c.get("flip_sin_to_cos", True), freq_shift=c.get("freq_shift", 0),
        down_block_types=down, mid_block_type=mid, up_block_types=up,
        only_cross_attention=c.get("only_cross_attention", False), block_out_channels=list(c["block_out_channels"]),
        layers_per_block=c["layers_per_block"], downsample_padding=c.get("downsample_padding", 1),
        mid_block_scale_factor=c.get("mid_block_scale_factor", 1.0), act_fn=c.get("act_fn", "silu"),
        norm_num_groups=c.get("norm_num_groups", 32), norm_eps=c.get("norm_eps", 1e-5),
        cross_attention_dim=c["cross_attention_dim"],
        transformer_layers_per_block=c.get("transformer_layers_per_block", 1),
        attention_head_dim=c.get("attention_head_dim", 8), num_attention_heads=c.get("num_attention_heads"),
        use_linear_projection=c.get("use_linear_projection", False),
        upcast_attention=c.get("upcast_attention", False),
        resnet_time_scale_shift=c.get("resnet_time_scale_shift", "default"))


class BrushNetModel(ModelMixin, ConfigMixin):
    """The BrushNet branch (see the module docstring). The constructor's names are the public
    ``config.json``'s, so a published BrushNet (or PowerPaint v2 ``BrushNet_CA``) directory loads
    with ``from_pretrained``; the attention block types make it the cross-attention variant."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        conditioning_channels: int = CONDITIONING_CHANNELS,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: Sequence[str] = (PLAIN_DOWN,) * 4,
        mid_block_type: str = PLAIN_MID,
        up_block_types: Sequence[str] = (PLAIN_UP,) * 4,
        only_cross_attention: bool | Sequence[bool] = False,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        transformer_layers_per_block: int | Sequence[int] = 1,
        attention_head_dim: int | Sequence[int] = 8,
        num_attention_heads: int | Sequence[int] | None = None,
        use_linear_projection: bool = False,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        brushnet_conditioning_channel_order: str = "rgb",
        global_pool_conditions: bool = False,
        class_embed_type: str | None = None,
        num_class_embeds: int | None = None,
        addition_embed_type: str | None = None,
        encoder_hid_dim: int | None = None,
        encoder_hid_dim_type: str | None = None,
        conditioning_embedding_out_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        for name in _UNSUPPORTED_UNLESS_NONE:
            if locals()[name] is not None:
                raise ValueError(f"BrushNet config: {name}={locals()[name]!r} is not supported "
                                 "(SD-1.5/2 branches only)")
        if global_pool_conditions:
            raise ValueError("BrushNet config: global_pool_conditions is not supported")
        if brushnet_conditioning_channel_order not in ("rgb", "bgr"):
            raise ValueError(f"BrushNet config: unknown brushnet_conditioning_channel_order "
                             f"{brushnet_conditioning_channel_order!r}")
        n = len(block_out_channels)
        if len(down_block_types) != n or len(up_block_types) != n:
            raise ValueError(f"BrushNet config: {len(down_block_types)} down and {len(up_block_types)} up block types "
                             f"for {n} block widths")
        heads = _per_block(num_attention_heads or attention_head_dim, n)
        head_dims = _per_block(attention_head_dim, n)
        only_cross = _per_block(only_cross_attention, n)
        layers = _per_block(transformer_layers_per_block, n)

        self.conv_in_condition = nn.Conv2d(in_channels + conditioning_channels, block_out_channels[0], 3, padding=1)
        time_dim = block_out_channels[0] * 4
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_dim, act_fn=act_fn)

        self.down_blocks = nn.ModuleList()
        self.brushnet_down_blocks = nn.ModuleList([_zero_conv(block_out_channels[0])])
        out_ch = block_out_channels[0]
        for i, kind in enumerate(down_block_types):
            in_ch, out_ch, last = out_ch, block_out_channels[i], i == n - 1
            self.down_blocks.append(get_down_block(
                kind, num_layers=layers_per_block, transformer_layers_per_block=layers[i], in_channels=in_ch,
                out_channels=out_ch, temb_channels=time_dim, add_downsample=not last, resnet_eps=norm_eps,
                resnet_act_fn=act_fn, resnet_groups=norm_num_groups, cross_attention_dim=cross_attention_dim,
                num_attention_heads=heads[i], attention_head_dim=head_dims[i] or out_ch,
                downsample_padding=downsample_padding, use_linear_projection=use_linear_projection,
                only_cross_attention=only_cross[i], upcast_attention=upcast_attention,
                resnet_time_scale_shift=resnet_time_scale_shift))
            for _ in range(layers_per_block + (0 if last else 1)):
                self.brushnet_down_blocks.append(_zero_conv(out_ch))

        mid_ch = block_out_channels[-1]
        self.brushnet_mid_block = _zero_conv(mid_ch)
        if mid_block_type in (PLAIN_MID, "UNetMidBlock2D"):
            # The public attention-free mid block: two resnets, nothing between them (diffusers'
            # UNetMidBlock2D without attention has the same layers and parameter names).
            self.mid_block = UNetMidBlock2D(
                in_channels=mid_ch, temb_channels=time_dim, num_layers=1, resnet_eps=norm_eps,
                resnet_act_fn=act_fn, resnet_groups=norm_num_groups, output_scale_factor=mid_block_scale_factor,
                resnet_time_scale_shift=resnet_time_scale_shift, add_attention=False)
        else:
            self.mid_block = get_mid_block(
                mid_block_type, transformer_layers_per_block=layers[-1], in_channels=mid_ch, temb_channels=time_dim,
                resnet_eps=norm_eps, resnet_act_fn=act_fn, output_scale_factor=mid_block_scale_factor,
                resnet_time_scale_shift=resnet_time_scale_shift, cross_attention_dim=cross_attention_dim,
                num_attention_heads=heads[-1], resnet_groups=norm_num_groups,
                use_linear_projection=use_linear_projection, upcast_attention=upcast_attention)

        self.up_blocks = nn.ModuleList()
        self.brushnet_up_blocks = nn.ModuleList()
        rev_ch, rev_heads = list(reversed(block_out_channels)), list(reversed(heads))
        rev_layers, rev_only_cross = list(reversed(layers)), list(reversed(only_cross))
        out_ch = rev_ch[0]
        for i, kind in enumerate(up_block_types):
            last = i == n - 1
            prev_ch, out_ch, in_ch = out_ch, rev_ch[i], rev_ch[min(i + 1, n - 1)]
            self.up_blocks.append(get_up_block(
                kind, num_layers=layers_per_block + 1, transformer_layers_per_block=rev_layers[i], in_channels=in_ch,
                out_channels=out_ch, prev_output_channel=prev_ch, temb_channels=time_dim, add_upsample=not last,
                resnet_eps=norm_eps, resnet_act_fn=act_fn, resolution_idx=i, resnet_groups=norm_num_groups,
                cross_attention_dim=cross_attention_dim, num_attention_heads=rev_heads[i],
                use_linear_projection=use_linear_projection, only_cross_attention=rev_only_cross[i],
                upcast_attention=upcast_attention, resnet_time_scale_shift=resnet_time_scale_shift,
                attention_head_dim=head_dims[i] or out_ch))
            for _ in range(layers_per_block + 1 + (0 if last else 1)):
                self.brushnet_up_blocks.append(_zero_conv(out_ch))

    @classmethod
    def from_unet(cls, unet_config: Any, *, cross_attention: bool = False, unet: nn.Module | None = None
                  ) -> "BrushNetModel":
        """A branch shaped like the base UNet of ``unet_config`` (:func:`config_from_unet`). With
        ``unet`` given, its weights are copied in as the public ``from_unet`` does (conv_in's weights
        into both the noisy-latent and the masked-latent input channels, the mask channel zero; time
        embedding and every block weight the branch shares; the zero convolutions stay zero): the
        starting point of training."""
        branch = cls(**config_from_unet(unet_config, cross_attention=cross_attention))
        if unet is not None:
            branch.copy_from_unet(unet)
        return branch

    @torch.no_grad()
    def copy_from_unet(self, unet: nn.Module) -> None:
        """The public ``from_unet``'s weight copy (see :meth:`from_unet`)."""
        w = torch.zeros_like(self.conv_in_condition.weight)
        lat = unet.conv_in.weight.shape[1]
        w[:, :lat] = unet.conv_in.weight
        w[:, lat:2 * lat] = unet.conv_in.weight
        self.conv_in_condition.weight.copy_(w)
        self.conv_in_condition.bias.copy_(unet.conv_in.bias)
        self.time_embedding.load_state_dict(unet.time_embedding.state_dict())
        for name in ("down_blocks", "mid_block", "up_blocks"):
            getattr(self, name).load_state_dict(getattr(unet, name).state_dict(), strict=False)

    @property
    def has_cross_attention(self) -> bool:
        """Whether the branch reads the text embeddings (PowerPaint v2) or not (BrushNet)."""
        blocks = [*self.down_blocks, self.mid_block, *self.up_blocks]
        return any(_has_attention(b) for b in blocks)

    def residual_counts(self) -> tuple[int, int]:
        """(down, up) residual counts: what a base UNet of the same geometry consumes."""
        return len(self.brushnet_down_blocks), len(self.brushnet_up_blocks)

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor | None,
                conditioning: torch.Tensor, conditioning_scale: float = 1.0) -> BrushNetResiduals:
        """The scaled residuals for ``sample`` (the noisy latent, already ``scale_model_input``-ed)
        at ``timestep``. ``conditioning``: :func:`brushnet_conditioning`'s 5 channels, batched like
        ``sample``. ``encoder_hidden_states`` is read only by the cross-attention variant (may be
        ``None`` otherwise)."""
        if self.config.brushnet_conditioning_channel_order == "bgr":
            conditioning = torch.flip(conditioning, dims=[1])
        if conditioning.shape[0] != sample.shape[0]:
            conditioning = conditioning.expand(sample.shape[0], -1, -1, -1)
        emb = _time_embedding(self.time_proj, self.time_embedding, sample, timestep)
        x = self.conv_in_condition(torch.cat([sample, conditioning], dim=1))

        skips: tuple[torch.Tensor, ...] = (x,)
        for block in self.down_blocks:
            if _has_attention(block):
                x, out = block(hidden_states=x, temb=emb, encoder_hidden_states=encoder_hidden_states)
            else:
                x, out = block(hidden_states=x, temb=emb)
            skips += out
        down = [conv(s) for s, conv in zip(skips, self.brushnet_down_blocks)]

        x = _run_mid(self.mid_block, x, emb, encoder_hidden_states)
        mid = self.brushnet_mid_block(x)

        up_features: list[torch.Tensor] = []
        for i, block in enumerate(self.up_blocks):
            k = len(block.resnets)
            res, skips = skips[-k:], skips[:-k]
            size = skips[-1].shape[2:] if i < len(self.up_blocks) - 1 else None
            x = walk_up_block(block, x, res, emb, encoder_hidden_states, size, collect=up_features)
        up = [conv(f) for f, conv in zip(up_features, self.brushnet_up_blocks)]
        residuals = BrushNetResiduals(down, mid, up)
        return residuals if conditioning_scale == 1.0 else residuals.scaled(conditioning_scale)


def _time_embedding(proj: nn.Module, embedding: nn.Module, sample: torch.Tensor, timestep: Any) -> torch.Tensor:
    """The timestep embedding for a batch (a scalar timestep is broadcast), in the sample's dtype."""
    t = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=sample.device)
    t = t.to(sample.device).reshape(-1)
    t = t.expand(sample.shape[0]) if t.numel() == 1 else t
    return embedding(proj(t).to(dtype=sample.dtype))


def _run_mid(block: nn.Module | None, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None
             ) -> torch.Tensor:
    if block is None:
        return x
    if _has_attention(block):
        return block(x, emb, encoder_hidden_states=context)
    return block(x, emb)


def _pop(add: list[torch.Tensor] | None) -> torch.Tensor | None:
    return add.pop(0) if add else None


def walk_down_block(block: nn.Module, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None,
                    add: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """A diffusers down block, layer by layer, adding the next of ``add`` (consumed from the front)
    after each resnet(+attention) layer and after the downsampler; returns (x, skips), the skips
    carrying the sums."""
    attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
    skips: tuple[torch.Tensor, ...] = ()
    for resnet, attn in zip(block.resnets, attentions):
        x = resnet(x, emb)
        if attn is not None:
            x = attn(x, encoder_hidden_states=context, return_dict=False)[0]
        r = _pop(add)
        x = x if r is None else x + r
        skips += (x,)
    if block.downsamplers is not None:
        for down in block.downsamplers:
            x = down(x)
        r = _pop(add)
        x = x if r is None else x + r
        skips += (x,)
    return x, skips


def walk_up_block(block: nn.Module, x: torch.Tensor, res: Sequence[torch.Tensor], emb: torch.Tensor,
                  context: torch.Tensor | None, upsample_size: Any, *, add: list[torch.Tensor] | None = None,
                  collect: list[torch.Tensor] | None = None) -> torch.Tensor:
    """A diffusers up block, layer by layer: each layer takes the last of ``res`` (its skip); its
    output is appended to ``collect`` (the branch's features, before any sum) and then the next of
    ``add`` is added (the base UNet's side); the same after the upsampler."""
    attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
    res = list(res)
    for resnet, attn in zip(block.resnets, attentions):
        x = resnet(torch.cat([x, res.pop()], dim=1), emb)
        if attn is not None:
            x = attn(x, encoder_hidden_states=context, return_dict=False)[0]
        if collect is not None:
            collect.append(x)
        r = _pop(add)
        x = x if r is None else x + r
    if block.upsamplers is not None:
        for up in block.upsamplers:
            x = up(x, upsample_size)
        if collect is not None:
            collect.append(x)
        r = _pop(add)
        x = x if r is None else x + r
    return x


def check_unet(unet: nn.Module) -> None:
    """Refuse a base UNet this walk does not reproduce (class/addition embeddings: SDXL and friends)."""
    cfg = unet.config
    for name in ("class_embed_type", "num_class_embeds", "addition_embed_type", "encoder_hid_dim_type",
                 "time_cond_proj_dim"):
        if cfg.get(name) is not None:
            raise ValueError(f"base UNet: {name}={cfg.get(name)!r} is not supported (an SD-1.5/2 UNet is)")


def unet_with_residuals(unet: nn.Module, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor,
                        residuals: BrushNetResiduals | None) -> torch.Tensor:
    """The base ``UNet2DConditionModel``'s prediction with ``residuals`` added where the public
    BrushNet UNet adds them (module docstring); ``None`` = the plain UNet. The residuals' batch must
    match ``sample``'s (see :meth:`BrushNetResiduals.repeat`)."""
    down = list(residuals.down) if residuals is not None else None
    up = list(residuals.up) if residuals is not None else None
    emb = _time_embedding(unet.time_proj, unet.time_embedding, sample, timestep)
    x = unet.conv_in(sample)
    skips: tuple[torch.Tensor, ...] = (x,)  # kept before the first residual is added (as the public UNet)
    r = _pop(down)
    x = x if r is None else x + r
    for block in unet.down_blocks:
        x, out = walk_down_block(block, x, emb, encoder_hidden_states, down)
        skips += out
    x = _run_mid(unet.mid_block, x, emb, encoder_hidden_states)
    if residuals is not None:
        x = x + residuals.mid
    for i, block in enumerate(unet.up_blocks):
        k = len(block.resnets)
        res, skips = skips[-k:], skips[:-k]
        size = skips[-1].shape[2:] if i < len(unet.up_blocks) - 1 else None
        x = walk_up_block(block, x, res, emb, encoder_hidden_states, size, add=up)
    if unet.conv_norm_out is not None:
        x = unet.conv_act(unet.conv_norm_out(x))
    return unet.conv_out(x)


def zero_convs(branch: BrushNetModel) -> list[nn.Conv2d]:
    """The branch's zero-initialised output convolutions, down first, then mid, then up."""
    return [*branch.brushnet_down_blocks, branch.brushnet_mid_block, *branch.brushnet_up_blocks]


def randomize_zero_convs(branch: BrushNetModel, seed: int, std: float = 0.05) -> BrushNetModel:
    """Seeded noise in every zero convolution: a *test* branch whose residuals are not all zero, so
    the paths that carry them are pinned by tests (a trained branch's are not zero either)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in zero_convs(branch):
            for p in conv.parameters():
                p.copy_((torch.randn(p.shape, generator=g) * std).to(p.dtype))
    return branch
