"""Image/text embeddings for CLIP score, CLIP-I and the DINO score, with ``transformers`` models.

* :class:`ClipEmbedder`: ``CLIPModel`` (image and text projections, L2-normalised). Default
  :data:`DEFAULT_CLIP` (torchmetrics' default CLIP for its CLIP score).
* :class:`DinoEmbedder`: ``Dinov2Model``; the image embedding is the final layer-normed CLS
  token (``pooler_output``), as in the DINO scores of AnyDoor and DreamBooth.

Preprocessing is done here with PIL (bicubic resize of the short side, centre crop,
normalisation with the model's mean/std), the recipe of ``CLIPImageProcessor`` and DINOv2's
``BitImageProcessor``; read from the model folder's ``preprocessor_config.json`` when there is
one. Doing it here keeps torchvision out (transformers' fast image processors need it).

Sources: a local directory (``save_pretrained`` layout) or a hub id; missing weights offline
fail in one :class:`~diffcompose.errors.WeightsMissingError` line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffcompose.errors import WeightsMissingError

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
DEFAULT_DINO = "facebook/dinov2-base"
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _resolve(source: str | Path, what: str) -> Path:
    from diffcompose.models.hub import resolve_model

    return resolve_model(str(source), ["config.json"], what=what,
                         allow_patterns=["*.json", "*.txt", "model.safetensors"],
                         hint="; pass a local directory (--model-dir), or leave the metric out")


def _load(cls: type, root: Path, what: str, device: torch.device | str) -> torch.nn.Module:
    from diffcompose.models.hub import quiet_libraries

    quiet_libraries()
    try:
        model = cls.from_pretrained(str(root))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsMissingError(f"cannot load {what} from {root}: {first}") from None
    return model.to(device).eval().requires_grad_(False)


def _preprocess_config(root: Path, size: int, mean: tuple, std: tuple, resize: int) -> tuple[int, int, tuple, tuple]:
    """(resize short side, crop size, mean, std), from ``preprocessor_config.json`` when present."""
    cfg_path = root / "preprocessor_config.json"
    if not cfg_path.is_file():
        return resize, size, mean, std
    cfg = json.loads(cfg_path.read_text())
    short = cfg.get("size", resize)
    short = short.get("shortest_edge", resize) if isinstance(short, dict) else short
    crop = cfg.get("crop_size", size)
    crop = crop.get("height", size) if isinstance(crop, dict) else crop
    return int(short), int(crop), tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))


def preprocess(images: list[np.ndarray], short: int, crop: int, mean: tuple, std: tuple) -> torch.Tensor:
    """Bicubic resize of the short side to ``short``, centre crop ``crop``, normalise: ``(N, 3, crop, crop)``."""
    out = []
    for im in images:
        pil = Image.fromarray(np.asarray(im, dtype=np.uint8))
        w, h = pil.size
        s = short / min(w, h)
        pil = pil.resize((max(crop, round(w * s)), max(crop, round(h * s))), Image.BICUBIC)
        w, h = pil.size
        left, top = (w - crop) // 2, (h - crop) // 2
        arr = np.asarray(pil.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
        out.append((arr - np.array(mean, np.float32)) / np.array(std, np.float32))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class ClipEmbedder:
    """CLIP image and text embeddings (unit length)."""

    def __init__(self, model: torch.nn.Module, tokenizer, prep: tuple) -> None:
        self.model, self.tokenizer, self.prep = model, tokenizer, prep
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, source: str | Path | None = None, device: torch.device | str = "cpu") -> "ClipEmbedder":
        from transformers import CLIPModel, CLIPTokenizer

        root = _resolve(source or DEFAULT_CLIP, "CLIP model")
        model = _load(CLIPModel, root, "CLIP model", device)
        try:
            tokenizer = CLIPTokenizer.from_pretrained(str(root))
        except Exception:
            raise WeightsMissingError(f"CLIP model {root} has no tokenizer (vocab.json, merges.txt)") from None
        size = model.config.vision_config.image_size
        return cls(model, tokenizer, _preprocess_config(root, size, CLIP_MEAN, CLIP_STD, size))

    @torch.no_grad()
    def images(self, images: list[np.ndarray]) -> torch.Tensor:
        pixels = preprocess(images, *self.prep).to(self.device)
        out = self.model.get_image_features(pixel_values=pixels)
        out = getattr(out, "pooler_output", out)  # transformers 5 returns an output object
        return _unit(out.float()).cpu()

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt")
        out = self.model.get_text_features(input_ids=tok.input_ids.to(self.device),
                                           attention_mask=tok.attention_mask.to(self.device))
        out = getattr(out, "pooler_output", out)
        return _unit(out.float()).cpu()


class DinoEmbedder:
    """DINOv2 image embeddings: the layer-normed CLS token, unit length."""

    def __init__(self, model: torch.nn.Module, prep: tuple) -> None:
        self.model, self.prep = model, prep
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, source: str | Path | None = None, device: torch.device | str = "cpu") -> "DinoEmbedder":
        from transformers import Dinov2Model

        root = _resolve(source or DEFAULT_DINO, "DINOv2 model")
        model = _load(Dinov2Model, root, "DINOv2 model", device)
        return cls(model, _preprocess_config(root, 224, IMAGENET_MEAN, IMAGENET_STD, 256))

    @torch.no_grad()
    def images(self, images: list[np.ndarray]) -> torch.Tensor:
        out = self.model(pixel_values=preprocess(images, *self.prep).to(self.device))
        return _unit(out.pooler_output.float()).cpu()


def image_similarity(embedder, a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two images' embeddings (-1..1; 1 = same embedding): CLIP-I and the DINO score."""
    e = embedder.images([a, b])
    return min(1.0, max(-1.0, float((e[0] * e[1]).sum())))  # float32 rounding can step past 1


def clip_score(embedder: ClipEmbedder, image: np.ndarray, text: str) -> float:
    """CLIP score ``100 * max(cos(image, text), 0)`` (0..100): CLIPScore (Hessel et al., 2021) with
    torchmetrics' weight 100 instead of 2.5. The clamp is per image as in the paper (torchmetrics
    clamps the batch mean instead: the same whenever the cosines are positive, as they are in practice)."""
    cos = float((embedder.images([image])[0] * embedder.texts([text])[0]).sum())
    return 100.0 * min(1.0, max(cos, 0.0))
