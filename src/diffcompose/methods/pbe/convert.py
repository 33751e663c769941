"""Convert the original Paint-by-Example checkpoint into our (diffusers) layout.

The original is one Lightning checkpoint: ``model.diffusion_model.*`` (UNet, LDM names),
``first_stage_model.*`` (VAE), ``cond_stage_model.transformer.*`` (HF CLIP vision model),
``cond_stage_model.mapper.resblocks.{i}.*`` (GLIDE-style blocks with a fused ``c_qkv``),
``cond_stage_model.final_ln.*``, ``proj_out.*`` and ``learnable_vector``. We write a
directory with ``unet/``, ``vae/``, ``image_encoder/`` and ``scheduler/`` in safetensors,
which :func:`~.components.load_pbe` (and diffusers' deprecated pipeline) can read.

``.ckpt`` files are unpickled by torch's weights-only unpickler: tensors and plain
containers, never arbitrary code. A full Lightning checkpoint of that era (1.4) also holds
bookkeeping around the weights: callback states keyed by the callback's *class*
(``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``), hyper-parameters as a
Lightning ``AttributeDict`` or an ``argparse.Namespace``, numpy scalars. Those names (an
explicit allowlist, :func:`allowed_global`) are accepted: Lightning's are replaced by inert
stand-ins (nothing is imported, nothing of theirs runs), numpy's scalar, dtype and array
rebuilders are numpy's own data constructors. Anything else is refused in one line that
names it. Only ``state_dict`` is used.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from diffcompose.errors import InputError
from diffcompose.models.hub import read_safetensors
from diffcompose.outdir import MODEL, building, check_out_dir

log = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
MAPPER_PREFIX = "cond_stage_model.mapper.resblocks."

#: The published model's geometry: SD1.x UNet with 9 input channels, SD VAE, CLIP ViT-L/14.
PBE_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=64, in_channels=9, out_channels=4, layers_per_block=2, block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=768, attention_head_dim=8,
)
PBE_VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, sample_size=512,
    scaling_factor=0.18215,
)
PBE_VISION_CONFIG: dict[str, Any] = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=768, hidden_act="quick_gelu",
)
PBE_SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, prediction_type="epsilon",
)

_BLOCK_RENAMES = {"attn.c_proj": "attn1.to_out.0", "ln_1": "norm1", "ln_2": "norm3",
                  "mlp.c_fc": "ff.net.0.proj", "mlp.c_proj": "ff.net.2"}


#: Modules whose names a Lightning checkpoint's bookkeeping refers to (callback classes as the
#: keys of ``callbacks``, ``AttributeDict`` hyper-parameters): replaced by :class:`_Inert`.
_LIGHTNING_MODULES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")
_INERT_NAMES = {"argparse.Namespace"}
#: numpy's own data constructors (numpy scalars and arrays in callback states or hyper-parameters).
_NUMPY_NAMES = {"numpy.core.multiarray.scalar": "scalar", "numpy._core.multiarray.scalar": "scalar",
                "numpy.core.multiarray._reconstruct": "_reconstruct",
                "numpy._core.multiarray._reconstruct": "_reconstruct",
                "numpy.ndarray": "ndarray", "numpy.dtype": "dtype"}


class _Inert:
    """Stands in for a class named in a checkpoint's bookkeeping: never imported, never run.

    The class itself can be a dict key (a callback state's); an object of it, rebuilt by the
    unpickler, becomes a plain ``OrderedDict`` that receives its items and attributes as data.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from collections import OrderedDict

        return OrderedDict()


def allowed_global(name: str) -> Any | None:
    """What the unpickler may use for the global ``name`` of a checkpoint, or ``None`` (refused)."""
    if name.startswith(_LIGHTNING_MODULES) or name in _INERT_NAMES:
        return type(name.rsplit(".", 1)[-1], (_Inert,), {"__module__": name.rsplit(".", 1)[0]})
    import numpy as np

    if name in _NUMPY_NAMES:
        attr = _NUMPY_NAMES[name]
        core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
        return getattr(np, attr) if attr in ("ndarray", "dtype") else getattr(core.multiarray, attr)
    module, _, attr = name.rpartition(".")
    if module == "numpy.dtypes":  # the dtype classes numpy 1.25+ pickles, e.g. numpy.dtypes.Float64DType
        obj = getattr(np.dtypes, attr, None)
        return obj if isinstance(obj, type) and issubclass(obj, np.dtype) else None
    return None


def _global_named(exc: Exception) -> str:
    import re

    found = re.search(r"GLOBAL (\S+)", str(exc))
    return f" ({found[1]})" if found else ""


def _torch_load(path: Path, *, mmap: bool = False) -> Any:
    """``torch.load`` with the weights-only unpickler, plus the allowlist above; refusals in one line.

    ``mmap``: leave the tensors of a zip checkpoint on disk until they are used (an entry never
    touched, such as an optimizer state, is never read); a legacy non-zip file is read whole.
    """
    import pickle
    import warnings
    import zipfile

    mmap = mmap and zipfile.is_zipfile(path)

    def load() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)

    refused = f"cannot read {path} as a weights-only checkpoint: it holds"
    try:
        return load()
    except pickle.UnpicklingError as exc:  # torch's message suggests loading unsafely: we never do
        first = exc
    except Exception:  # truncated file, not a pickle or zip at all
        raise InputError(f"cannot read {path} as a weights-only checkpoint: not a PyTorch checkpoint, "
                         "or a truncated one") from None
    names: list[str] = []
    if zipfile.is_zipfile(path):
        try:  # reads the pickle's opcodes, runs nothing
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:
            names = []
    if not names:
        raise InputError(f"{refused} objects other than tensors{_global_named(first)}, which could run code "
                         "when loaded (refused)")
    allowed = {name: allowed_global(name) for name in names}
    others = sorted(name for name, obj in allowed.items() if obj is None)
    if others:
        more = f" and {len(others) - 4} more" if len(others) > 4 else ""
        raise InputError(f"{refused} objects of {', '.join(others[:4])}{more}: neither tensors nor a Lightning "
                         "checkpoint's bookkeeping, and they could run code when loaded (refused)")
    safe = [(obj, name) for name, obj in allowed.items()]
    if "numpy.dtype" in allowed:  # ``numpy.dtype(...)`` returns an object of one of numpy's dtype classes
        import numpy as np

        safe += [(c, f"numpy.dtypes.{n}") for n, c in vars(np.dtypes).items()
                 if isinstance(c, type) and issubclass(c, np.dtype)]
    try:
        with torch.serialization.safe_globals(safe):
            return load()
    except Exception as exc:  # allowlisted names used in a way the safe unpickler does not build
        raise InputError(f"{refused} Lightning bookkeeping ({', '.join(sorted(allowed))}) in a form that cannot "
                         f"be read as plain data{_global_named(exc)} (refused)") from None


#: The DDPM's noise schedule an LDM checkpoint stores as buffers (ours is the scheduler config): not weights.
SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2", "logvar")


def refuse_unknown_keys(keys: Iterable[str], families: tuple[str, ...], checkpoint: Path, what: str) -> None:
    """One line naming the keys of no family a converter maps or knowingly skips (``families``: key
    prefixes; the schedule buffers are always skipped): weights nobody would load are never dropped silently."""
    unknown = [k for k in keys if not k.startswith(families) and k not in SCHEDULE_BUFFERS]
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise InputError(f"{checkpoint} holds weights of no {what} part: {', '.join(unknown[:3])}{more}")


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The flat state dict of a ``.ckpt``/``.pt``/``.pth`` (safely unpickled) or ``.safetensors`` file."""
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        state: Any = read_safetensors(path, "checkpoint")
    else:
        state = _torch_load(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} does not hold a state dict of tensors")
    return state


def convert_encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original ``cond_stage_model``/``proj_out``/``learnable_vector`` -> :class:`ExemplarEncoder` keys.

    The mapper's fused ``c_qkv`` (3W x W, one head) splits row-wise into q, k and v.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(CLIP_PREFIX):
            if not key.endswith("position_ids"):
                out["model." + key[len(CLIP_PREFIX):]] = value
        elif key.startswith(MAPPER_PREFIX):
            index, _, rest = key[len(MAPPER_PREFIX):].partition(".")
            base = f"mapper.blocks.{index}."
            if rest.startswith("attn.c_qkv."):
                param = rest.rsplit(".", 1)[1]
                for name, part in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0)):
                    out[f"{base}attn1.{name}.{param}"] = part.clone()
                continue
            for old, new in _BLOCK_RENAMES.items():
                if rest.startswith(old + "."):
                    out[base + new + rest[len(old):]] = value
                    break
            else:
                raise InputError(f"unexpected mapper key in checkpoint: {key}")
        elif key.startswith("cond_stage_model.final_ln."):
            out["final_layer_norm." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("proj_out."):
            out[key] = value
        elif key == "learnable_vector":
            out["uncond_vector"] = value.reshape(1, 1, -1)
    return out


def configs_like(like: Path, files: dict[str, str]) -> dict[str, dict[str, Any]]:
    """``--like DIR``: each part's config (``files``: part -> path in DIR), without diffusers' ``_`` keys."""
    out = {}
    for part, rel in files.items():
        p = like / rel
        if not p.is_file():
            raise InputError(f"--like {like}: missing {rel}")
        out[part] = {k: v for k, v in json.loads(p.read_text()).items() if not k.startswith("_")}
    return out


def _configs(like: Path | None) -> dict[str, dict[str, Any]]:
    if like is None:
        return {"unet": PBE_UNET_CONFIG, "vae": PBE_VAE_CONFIG, "image_encoder": PBE_VISION_CONFIG,
                "scheduler": PBE_SCHEDULER_CONFIG}
    return configs_like(like, {"unet": "unet/config.json", "vae": "vae/config.json",
                               "image_encoder": "image_encoder/config.json",
                               "scheduler": "scheduler/scheduler_config.json"})


def strict_load(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module``; any missing, unexpected or misshapen weight is one :class:`InputError` line."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch: torch's first line is a header, the second names the weight
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise InputError(f"{what} weights do not fit its configuration: {(lines[1:2] or lines or [''])[0]}") from None
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise InputError(f"{what} weights do not fit its configuration: {len(missing)} missing "
                         f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")


def convert_pbe(checkpoint: Path, out_dir: Path, *, like: Path | None = None, force: bool = False,
                in_channels: int = 9, what: str = "Paint-by-Example", tool: str = "convert pbe",
                tokens: str = "pooled", check: Callable[[dict[str, torch.Tensor]], None] | None = None,
                engine: str | None = None) -> Path:
    """Write ``out_dir`` (unet/, vae/, image_encoder/, scheduler/, model_index.json) from ``checkpoint``.

    ``in_channels``: the UNet input of a model that extends Paint-by-Example's (Paint-by-Sketch:
    12; its keys are otherwise the same), named ``what`` in messages and ``tool`` on the folder.
    ``tokens``: what the image encoder's mapper reads (ObjectStitch: ``"patches"``, same keys).
    ``check``: the extending model's own checks of the loaded state (its key families), run before
    anything is built, so the checkpoint is read once. ``engine``: the extending model's engine, named
    on the folder (only it can run it)."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from transformers import CLIPVisionConfig

    from diffcompose.methods.pbe.encoder import ExemplarEncoder
    from diffcompose.methods.pbe.tiny import model_index

    out_dir = check_out_dir(Path(out_dir), [Path(checkpoint)] + ([Path(like)] if like else []), force=force,
                            kind=MODEL)
    if not Path(checkpoint).is_file():
        raise InputError(f"checkpoint not found: {checkpoint}")
    state = load_checkpoint(Path(checkpoint))
    if check is not None:
        check(state)
    for prefix in (UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX, MAPPER_PREFIX):
        if not any(k.startswith(prefix) for k in state):
            raise InputError(f"{checkpoint} is not a {what} checkpoint: no '{prefix}*' weights")
    cfg = _configs(like)
    if like is None:
        cfg["unet"] = {**cfg["unet"], "in_channels": in_channels}
    elif cfg["unet"].get("in_channels") != in_channels:
        raise InputError(f"--like {like}: its UNet takes {cfg['unet'].get('in_channels')} input channels, a {what} "
                         f"UNet {in_channels}")

    unet = UNet2DConditionModel(**cfg["unet"])
    strict_load(unet, convert_ldm_unet_checkpoint(state, dict(unet.config)), "UNet")
    vae = AutoencoderKL(**cfg["vae"])
    strict_load(vae, convert_ldm_vae_checkpoint(state, dict(vae.config)), "VAE")
    enc_state = convert_encoder_state(state)
    mapper_layers = len({k.split(".")[2] for k in enc_state if k.startswith("mapper.blocks.")})
    vision = {k: v for k, v in cfg["image_encoder"].items() if k not in ("mapper_layers", "architectures", "token_mode")}
    encoder = ExemplarEncoder(CLIPVisionConfig(**vision), mapper_layers, tokens)
    strict_load(encoder, enc_state, "image encoder")

    with building(out_dir, tool) as tmp:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        vae.save_pretrained(tmp / "vae", safe_serialization=True)
        encoder.save_pretrained(tmp / "image_encoder")
        PNDMScheduler.from_config(cfg["scheduler"]).save_pretrained(tmp / "scheduler")
        (tmp / "model_index.json").write_text(json.dumps(model_index(engine), indent=2))
    log.info("converted %s -> %s", checkpoint, out_dir)
    return out_dir
