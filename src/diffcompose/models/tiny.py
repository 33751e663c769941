"""Tiny, randomly initialised models in the real on-disk layout, for tests and smoke runs.

:func:`write_tiny_sd` writes a complete Stable Diffusion 1.x-layout diffusers directory
(``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``) plus the extras the FreeCompose engine loads (``t2i_adapter_canny/``,
``t2i_adapter_sketch/``, ``vgg/``), with safetensors weights. Loading it goes through
exactly the code that loads real checkpoints, so tests exercise that code.

The UNet keeps SD1.x's block structure (4 levels, 3 cross-attention down blocks, 2 layers
per block, 3 cross-attention up blocks with 3 layers each: 16 attention layers, decoder
``attn1`` in ``up_blocks.1/2/3``) with small widths. The configs are functions with
keyword overrides so other engines can reuse them (Paint-by-Example: a 9-channel UNet).

Outputs of a tiny model are noise: it is for checking plumbing, never for results.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from diffcompose.errors import InputError
from diffcompose.outdir import mark

log = logging.getLogger(__name__)

#: Bump when the tiny layout changes, so cached copies are rebuilt.
TINY_VERSION = 3
TINY_BLOCKS = (32, 32, 64, 64)
TINY_TEXT_DIM = 32
TINY_SAMPLE_SIZE = 16  # latent side: the tiny model works at 128x128 pixels by default
SHARED_TOKENIZER_ENV = "DIFFCOMPOSE_CLIP_TOKENIZER"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def tiny_unet_config(**overrides: Any) -> dict[str, Any]:
    """Config of a small ``UNet2DConditionModel`` with SD1.x's block structure."""
    cfg: dict[str, Any] = dict(
        sample_size=TINY_SAMPLE_SIZE, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=TINY_BLOCKS,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_TEXT_DIM, attention_head_dim=2, norm_num_groups=8,
    )
    cfg.update(overrides)
    return cfg


def tiny_vae_config(**overrides: Any) -> dict[str, Any]:
    """Config of a small ``AutoencoderKL`` with SD's 8x downsampling and 4 latent channels."""
    cfg: dict[str, Any] = dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=TINY_SAMPLE_SIZE * 8, scaling_factor=0.18215,
    )
    cfg.update(overrides)
    return cfg


def tiny_text_config(vocab_size: int, bos_id: int, eos_id: int, **overrides: Any) -> dict[str, Any]:
    """Config of a small ``CLIPTextModel``."""
    cfg: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=TINY_TEXT_DIM, intermediate_size=64, projection_dim=TINY_TEXT_DIM,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id,
    )
    cfg.update(overrides)
    return cfg


def tiny_adapter_config(**overrides: Any) -> dict[str, Any]:
    """Config of a small full ``T2IAdapter`` (1-channel input, like the SD1.5 canny/sketch ones)."""
    cfg: dict[str, Any] = dict(in_channels=1, channels=list(TINY_BLOCKS), num_res_blocks=1, downscale_factor=8,
                               adapter_type="full_adapter")
    cfg.update(overrides)
    return cfg


def tiny_scheduler_config(prediction_type: str = "epsilon") -> dict[str, Any]:
    """SD1.x's training noise schedule."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type=prediction_type, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


#: VGG16 widths of the tiny perceptual network (real: 64, 128, 256, 512, 512).
TINY_VGG_WIDTHS = (4, 8, 8, 16, 16)


# ----------------------------------------------------------------------------- tokenizer

def _byte_alphabet() -> list[str]:
    """The 256 printable characters byte-level BPE maps bytes to (GPT-2/CLIP convention)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + n))
            n += 1
    return chars


def _tokenizer_vocab(shared_dir: Path | None, n_merges: int = 1000) -> tuple[dict[str, int], list[str]]:
    """A small CLIP BPE vocabulary: the real one's first ``n_merges`` merges if available, else bytes only."""
    if shared_dir is not None and (shared_dir / "tokenizer.json").is_file():
        model = json.loads((shared_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"][:n_merges]]
        keep = 512 + len(merges)
        vocab = {tok: i for tok, i in model["vocab"].items() if i < keep}
    else:
        base = _byte_alphabet()
        vocab = {c: i for i, c in enumerate(base + [c + "</w>" for c in base])}
        merges = []
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


def write_tiny_tokenizer(path: Path, shared_dir: Path | None = None) -> int:
    """Save a small real ``CLIPTokenizer`` to ``path``; return its vocabulary size."""
    from transformers import CLIPTokenizer

    vocab, merges = _tokenizer_vocab(shared_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    tok = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], model_max_length=77)
    tok.save_pretrained(str(path))
    return len(vocab)


def default_shared_tokenizer() -> Path | None:
    """The shared CLIP tokenizer folder when present (env override, else ``../shared`` of the checkout)."""
    env = os.environ.get(SHARED_TOKENIZER_ENV)
    cand = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "assets" / "clip_tokenizer"
    return cand if (cand / "tokenizer.json").is_file() else None


# ----------------------------------------------------------------------------- writer

def write_tiny_sd(path: str | os.PathLike, *, seed: int = 0, unet_overrides: dict[str, Any] | None = None,
                  prediction_type: str = "epsilon", tokenizer_source: Path | None | str = "auto") -> Path:
    """Write a complete tiny SD1.x-layout diffusers directory to ``path`` (created; must not exist)."""
    from diffusers import AutoencoderKL, DDIMScheduler, T2IAdapter, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffcompose.models.hub import quiet_libraries
    from diffcompose.models.vgg import VGG16Features

    quiet_libraries()
    root = Path(path)
    root.mkdir(parents=True, exist_ok=False)
    shared = default_shared_tokenizer() if tokenizer_source == "auto" else tokenizer_source
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vocab_size = write_tiny_tokenizer(root / "tokenizer", Path(shared) if shared else None)
        unet = UNet2DConditionModel(**tiny_unet_config(**(unet_overrides or {})))
        unet.save_pretrained(root / "unet", safe_serialization=True)
        AutoencoderKL(**tiny_vae_config()).save_pretrained(root / "vae", safe_serialization=True)
        text = CLIPTextModel(CLIPTextConfig(**tiny_text_config(vocab_size, vocab_size - 2, vocab_size - 1)))
        text.save_pretrained(root / "text_encoder", safe_serialization=True)
        for kind in ("canny", "sketch"):
            adapter = T2IAdapter(**tiny_adapter_config(channels=list(unet.config.block_out_channels)))
            adapter.save_pretrained(root / f"t2i_adapter_{kind}", safe_serialization=True)
        vgg = VGG16Features(TINY_VGG_WIDTHS)
        (root / "vgg").mkdir()
        save_file({k: v.contiguous() for k, v in vgg.state_dict().items()}, str(root / "vgg" / "model.safetensors"))
        (root / "vgg" / "config.json").write_text(json.dumps({"widths": list(TINY_VGG_WIDTHS)}))
        # LPIPS-like channel weights of the tiny widths (non-negative, as LPIPS's are)
        heads = {f"lin{i}": torch.rand(w) for i, w in enumerate(TINY_VGG_WIDTHS)}
        save_file(heads, str(root / "vgg" / "lpips.safetensors"))
    DDIMScheduler(**tiny_scheduler_config(prediction_type)).save_pretrained(root / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False,
        "diffcompose_tiny": TINY_VERSION,
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root


def tiny_cache_dir() -> Path:
    """Where ``--model tiny`` lives: ``$DIFFCOMPOSE_CACHE`` or ``~/.cache/diffcompose``."""
    base = os.environ.get("DIFFCOMPOSE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diffcompose"
    return Path(base) / f"tiny-sd1-v{TINY_VERSION}"


def ensure_written(target: Path, writer: Callable[[Path], object], what: str) -> Path:
    """``target`` once ``writer`` has filled it, written atomically (a half-written one is never used)."""
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        writer(tmp / "m")
        mark(tmp / "m", f"tiny {what}")
        try:
            os.replace(tmp / "m", target)  # never onto a non-empty folder: nothing of a user's is replaced
        except OSError:
            if not (target / "model_index.json").is_file():  # not another process's copy: someone else's folder
                raise InputError(f"{target} exists and is not a tiny model written by diffcompose; "
                                 "move it away or set DIFFCOMPOSE_CACHE to another folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote the tiny random %s to %s", what, target)
    return target


def ensure_tiny_model(path: Path | None = None) -> Path:
    """The tiny SD model directory, written once."""
    return ensure_written(path or tiny_cache_dir(), write_tiny_sd, "model")


def ensure_tiny_inpainting_model(path: Path | None = None) -> Path:
    """A tiny SD-inpainting directory (the same layout, a 9-channel UNet), written once."""
    target = path or tiny_cache_dir().with_name(f"tiny-sd1-inpaint-v{TINY_VERSION}")
    return ensure_written(target, lambda p: write_tiny_sd(p, unet_overrides={"in_channels": 9}), "inpainting model")
