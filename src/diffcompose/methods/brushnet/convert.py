"""``convert brushnet CKPT OUT_DIR``: a public BrushNet branch into a folder the engine loads.

The published branches are already in diffusers' shape: a folder with ``config.json`` and
``diffusion_pytorch_model.safetensors`` (TencentARC's ``segmentation_mask_brushnet_ckpt`` and
``random_mask_brushnet_ckpt``; PowerPaint v2's ``PowerPaint_Brushnet``). Such a folder needs no
conversion: ``--model DIR`` loads it as it is. This converter is for the other shapes the same
weights travel in: a single state-dict file (the community's ``brushnet_*.safetensors``, a
``.bin``/``.pt`` saved by ``torch.save``, a checkpoint whose tensors sit under ``state_dict``,
``module.`` or ``brushnet.``) and for checking a folder's weights file key by key.

Every key family of :class:`~.model.BrushNetModel` is mapped one to one (the module keeps the
public names): ``conv_in_condition``, ``time_embedding.linear_{1,2}``, ``down_blocks.*``,
``brushnet_down_blocks.{i}``, ``mid_block.*``, ``brushnet_mid_block``, ``up_blocks.*``,
``brushnet_up_blocks.{i}``. A key of any other family is refused in one line; so is a missing or
misshapen weight. The geometry comes from, in order: ``--like DIR`` (a BrushNet folder's
``config.json`` or an SD model's ``unet/config.json``), a BrushNet ``config.json`` beside the
checkpoint file, else SD-1.5's; the cross-attention variant (PowerPaint v2's ``BrushNet_CA``)
when the keys hold attention layers.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from diffcompose.errors import InputError

log = logging.getLogger(__name__)

#: The key families of a branch, as regular expressions over the whole key.
FAMILIES = {
    "input convolution": r"conv_in_condition\.(weight|bias)",
    "time embedding": r"time_embedding\.linear_[12]\.(weight|bias)",
    "down blocks": r"down_blocks\.\d+\..+",
    "down zero convolutions": r"brushnet_down_blocks\.\d+\.(weight|bias)",
    "mid block": r"mid_block\..+",
    "mid zero convolution": r"brushnet_mid_block\.(weight|bias)",
    "up blocks": r"up_blocks\.\d+\..+",
    "up zero convolutions": r"brushnet_up_blocks\.\d+\.(weight|bias)",
}
_FAMILY = re.compile("|".join(f"(?:{p})" for p in FAMILIES.values()))
#: Wrappers a saved state dict may put around the branch's own keys.
PREFIXES = ("module.", "brushnet.", "model.")
#: SD-1.5's UNet geometry (the base every published SD-1.5 branch was trained beside).
SD15_UNET_CONFIG: dict[str, Any] = dict(
    in_channels=4, block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, cross_attention_dim=768,
    attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu", downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The flat tensors of ``path`` (safetensors, or a weights-only torch file), nested wrappers removed."""
    from diffcompose.methods.pbe.convert import load_checkpoint

    return load_checkpoint(Path(path))


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The branch's own keys: a prefix every key shares (:data:`PREFIXES`, repeatedly) is removed."""
    changed = True
    while changed and state:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def map_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every key in one of :data:`FAMILIES` (the module keeps the public names); anything else is one line."""
    state = strip_prefix(state)
    unknown = sorted(k for k in state if not _FAMILY.fullmatch(k))
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise InputError(f"not a BrushNet branch: unknown keys {', '.join(unknown[:3])}{more} (a branch holds only "
                         f"{', '.join(FAMILIES)})")
    if not any(k.startswith("brushnet_") for k in state):
        raise InputError("not a BrushNet branch: no zero-convolution keys "
                         "(brushnet_down_blocks.*, brushnet_mid_block.*)")
    return dict(state)


def has_attention(state: dict[str, torch.Tensor]) -> bool:
    """Whether the keys hold attention layers (PowerPaint v2's ``BrushNet_CA``)."""
    return any(".attentions." in k for k in state)


def branch_config(checkpoint: Path, like: Path | None, cross_attention: bool) -> dict[str, Any]:
    """The branch's config (see the module docstring for the order the sources are read in)."""
    from diffcompose.methods.brushnet.model import config_from_unet

    if like is not None:
        for rel in ("config.json", "brushnet/config.json", "unet/config.json"):
            if (Path(like) / rel).is_file():
                cfg = _read(Path(like) / rel)
                if rel == "unet/config.json":
                    return config_from_unet(cfg, cross_attention=cross_attention)
                return cfg
        raise InputError(f"--like {like}: neither config.json (a BrushNet folder) nor unet/config.json (an SD model)")
    beside = Path(checkpoint).with_name("config.json")
    if beside.is_file():
        cfg = _read(beside)
        if "conditioning_channels" in cfg or cfg.get("_class_name") == "BrushNetModel":
            return cfg
    log.info("no config given: SD-1.5's geometry, %s cross-attention", "with" if cross_attention else "without")
    return config_from_unet(SD15_UNET_CONFIG, cross_attention=cross_attention)


def _read(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{path} is not a JSON object")
    return cfg


def check_fit(expected: dict[str, torch.Size], state: dict[str, torch.Tensor]) -> None:
    """Refuse, in one line and before any memory is taken, a state dict whose names or shapes are not the
    config's (``expected``: name -> shape of the empty model)."""
    what = "BrushNet branch weights do not fit its configuration (pass --like DIR for another geometry)"
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InputError(f"{what}: {len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:2]})")
    for name, shape in expected.items():
        if state[name].shape != shape:
            raise InputError(f"{what}: {name} is {tuple(state[name].shape)}, expected {tuple(shape)}")


def build_branch(state: dict[str, torch.Tensor], config: dict[str, Any]) -> Any:
    """A :class:`~.model.BrushNetModel` of ``config`` holding ``state`` (strictly: every weight, right shapes)."""
    from diffcompose.methods.brushnet.model import BrushNetModel

    try:
        with torch.device("meta"):
            branch = BrushNetModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    except (ValueError, TypeError) as exc:
        raise InputError(f"BrushNet config: {str(exc).splitlines()[0]}") from None
    check_fit({k: v.shape for k, v in branch.state_dict().items()}, state)
    branch.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return branch


def convert_brushnet(checkpoint: Path, out_dir: Path, *, like: Path | None = None, force: bool = False) -> Path:
    """Write ``out_dir`` (``config.json`` + ``diffusion_pytorch_model.safetensors``) from ``checkpoint``."""
    from diffcompose.outdir import MODEL, building, check_out_dir

    out_dir = check_out_dir(Path(out_dir), [Path(checkpoint)] + ([Path(like)] if like else []), force=force,
                            kind=MODEL)
    state = map_keys(read_state(Path(checkpoint)))
    branch = build_branch(state, branch_config(Path(checkpoint), like, has_attention(state)))
    del state
    with building(out_dir, "convert brushnet") as tmp:
        branch.save_pretrained(tmp, safe_serialization=True)
    log.info("converted %s -> %s (%s cross-attention)", checkpoint, out_dir,
             "with" if branch.has_cross_attention else "without")
    return out_dir
