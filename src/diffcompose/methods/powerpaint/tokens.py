"""PowerPaint's task tokens in a tokenizer and a CLIP text encoder, and the interpolated task prompts.

The public code wraps the tokenizer (a placeholder such as ``P_obj`` is replaced by its ten
token words ``P_obj_0 ... P_obj_9`` before tokenizing) and the text encoder's embedding layer
(ids past the vocabulary look up the learned vectors). Here the same words are added to the
tokenizer as ordinary added tokens, in the public order, so they get the same ids
(vocabulary size + 0..29), and the learned vectors become the embedding matrix's extra rows: a
plain ``CLIPTextModel`` then computes the same embeddings, bit for bit (a row lookup either
way), and saves and loads like any other.
"""

from __future__ import annotations

from typing import Any

import torch

from diffcompose.methods.powerpaint.prompts import TASK_TOKENS, VECTORS_PER_TOKEN


def token_words(placeholder: str) -> list[str]:
    """``P_obj`` -> ``["P_obj_0", ..., "P_obj_9"]``."""
    return [f"{placeholder}_{i}" for i in range(VECTORS_PER_TOKEN)]


def add_task_words(tokenizer: Any) -> list[int]:
    """Add the 30 task words to ``tokenizer`` (in the public order); returns their ids. A tokenizer
    that has them already is left as it is."""
    words = [w for p in TASK_TOKENS for w in token_words(p)]
    missing = [w for w in words if w not in tokenizer.get_vocab()]
    if missing and len(missing) != len(words):
        raise ValueError(f"tokenizer has some PowerPaint task words but not {missing[0]}")
    if missing:
        tokenizer.add_tokens(words)
    ids = tokenizer.convert_tokens_to_ids(words)
    if ids != list(range(ids[0], ids[0] + len(words))):
        raise ValueError("the PowerPaint task words do not have consecutive ids")
    return ids


def expand(text: str) -> str:
    """Each placeholder in ``text`` replaced by its token words, as the public tokenizer wrapper does
    (placeholders in the public order; every vector kept, none shuffled)."""
    for placeholder in TASK_TOKENS:
        if placeholder in text:
            text = text.replace(placeholder, " ".join(token_words(placeholder)))
    return text


def install_task_vectors(text_encoder: Any, vectors: dict[str, torch.Tensor], first_id: int) -> None:
    """Grow ``text_encoder``'s token embedding to hold the learned vectors at ids ``first_id ..``
    (``vectors``: placeholder -> ``(10, D)``, as the public checkpoints store them)."""
    emb = text_encoder.get_input_embeddings()
    base = emb.weight.data[:first_id]
    rows = [vectors[p].to(base.dtype) for p in TASK_TOKENS]
    weight = torch.cat([base, *rows])
    new = torch.nn.Embedding(weight.shape[0], weight.shape[1], device=weight.device, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    text_encoder.set_input_embeddings(new)
    text_encoder.config.vocab_size = weight.shape[0]


@torch.no_grad()
def encode_text(tokenizer: Any, text_encoder: Any, text: str, device: torch.device) -> torch.Tensor:
    """``(1, 77, D)`` CLIP embeddings of one text (placeholders expanded), padded to the tokenizer's length."""
    ids = tokenizer(expand(text), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids.to(device))[0]


def encode_pair(tokenizer: Any, text_encoder: Any, pair: tuple[str, str], t: float, device: torch.device
                ) -> torch.Tensor:
    """``t * E(A) + (1 - t) * E(B)`` in the text encoder's dtype: the public interpolation, written in its
    order of operations (so the result is the same bit for bit). Each text is encoded alone, as there."""
    a = encode_text(tokenizer, text_encoder, pair[0], device)
    b = encode_text(tokenizer, text_encoder, pair[1], device)
    return (a * t + (1 - t) * b).to(text_encoder.dtype)
