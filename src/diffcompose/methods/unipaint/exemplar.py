"""The exemplar's placeholder token: a prompt ``#`` whose token embedding is replaced.

Facts from the public code (``ldm/modules/embedding_manager.py``, the exemplar notebook and demo):
the placeholder string is ``#`` (one CLIP token); its *input* token embedding (before the position
embedding is added) is replaced by a start embedding, and the prompt is then encoded by the text
encoder as usual. The start embedding is the token embedding of a subject word (the demo's
"specify a single word"; its default "auto select" picks the vocabulary token whose CLIP text
embedding best matches the exemplar's CLIP image embedding, which needs the full CLIP model).
With ``--exemplar-clip`` the word is chosen as the public "auto select" does (:func:`match_token`).
The public code computes this context once, detached, and never optimises the embedding (its
optimiser holds the UNet's parameters only): what is learned is the UNet's response to the
token, by the exemplar term of the fine-tuning (:mod:`.tuning`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from diffcompose.errors import InputError

#: The public placeholder string for the exemplar.
PLACEHOLDER = "#"


def single_token(tokenizer: Any, word: str, what: str) -> int:
    """The id of ``word`` when it is exactly one token, else one line."""
    ids = tokenizer(word).input_ids[1:-1]  # without the start and end tokens
    if len(ids) != 1:
        raise InputError(f"{what} {word!r} is {len(ids)} tokens; give a word that is a single token")
    return int(ids[0])


def placeholder_token(tokenizer: Any) -> int:
    return single_token(tokenizer, PLACEHOLDER, "the placeholder")


@torch.no_grad()
def word_embedding(sd: Any, word: str) -> torch.Tensor:
    """``(D,)``: the input token embedding of ``word`` (no position embedding)."""
    token = single_token(sd.tokenizer, word, "--exemplar-word")
    table = sd.text_encoder.get_input_embeddings()
    return table(torch.tensor([token], device=table.weight.device))[0]


@torch.no_grad()
def placeholder_context(sd: Any, prompt: str, token: int, embedding: torch.Tensor) -> torch.Tensor:
    """``(1, 77, D)``: ``prompt`` encoded with ``token``'s input embedding replaced by ``embedding``."""
    table = sd.text_encoder.get_input_embeddings()
    ids = sd.tokenizer([prompt], padding="max_length", max_length=sd.tokenizer.model_max_length,
                       truncation=True, return_tensors="pt").input_ids.to(table.weight.device)

    def replace(module: Any, args: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[args[0] == token] = embedding.to(out.dtype)
        return out

    handle = table.register_forward_hook(replace)
    try:
        return sd.text_encoder(ids)[0].to(sd.dtype)
    finally:
        handle.remove()


def exemplar_pixels(reference: np.ndarray, reference_mask: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """The exemplar at the working ``size`` (bilinear, as the public notebook), its background white when a
    reference mask is given (the task's convention)."""
    if reference_mask is not None:
        reference = np.where(reference_mask[..., None], reference, np.uint8(255))
    return np.asarray(Image.fromarray(reference).resize(size, Image.Resampling.BILINEAR))


# ----------------------------------------------------------------------------- the public "auto select"

@torch.no_grad()
def token_text_embeddings(clip: Any, vocab: int, bos: int, eos: int, chunk: int = 1024) -> torch.Tensor:
    """``(vocab, P)``: CLIP's projected, unit-length text embedding of each one-token prompt
    ``<BOS> token <EOS> ... <EOS>`` (77 long), for the tokens ``0 .. vocab - 1`` (the public precompute)."""
    device = clip.text_projection.weight.device
    rows = []
    for start in range(0, vocab, chunk):
        tokens = torch.arange(start, min(vocab, start + chunk), device=device)
        ids = torch.cat([torch.full((len(tokens), 1), bos, device=device), tokens[:, None],
                         torch.full((len(tokens), 75), eos, device=device)], dim=1)
        emb = clip.text_projection(clip.text_model(ids).pooler_output)
        rows.append(emb / emb.norm(dim=-1, keepdim=True))
    return torch.cat(rows)


@torch.no_grad()
def match_token(clip: Any, processor: Any, image: np.ndarray, text: torch.Tensor) -> int:
    """The token whose text embedding (:func:`token_text_embeddings`) best matches ``image``'s CLIP image
    embedding (the public ``match_token_for_image`` with ``topk=1``, whose softmax weight is then 1)."""
    device = clip.visual_projection.weight.device
    pixels = processor(images=Image.fromarray(image), return_tensors="pt")["pixel_values"].to(device, clip.dtype)
    emb = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)
    emb = emb / emb.norm(dim=-1, keepdim=True)
    logits = (text.to(emb.dtype) @ emb.T) * clip.logit_scale.exp()
    return int(logits[:, 0].argmax())


def load_clip(source: str, device: torch.device) -> tuple[Any, Any]:
    """(CLIPModel, its image processor) from a local folder or a cached hub id, or one line."""
    from transformers import CLIPImageProcessor, CLIPModel

    from diffcompose.models.loader import resolve_extra

    root = resolve_extra(source, ["config.json", "preprocessor_config.json"], "CLIP model for --exemplar-clip")
    return CLIPModel.from_pretrained(str(root)).to(device).eval(), CLIPImageProcessor.from_pretrained(str(root))
