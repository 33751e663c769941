"""PowerPaint's per-task prompts and their embeddings, pinned to the public assembly.

Written out (CI): the demo's prompt strings per task and version, character for character, and
the public embedding path (placeholder words spliced in by a wrapped embedding layer, then
``t * E(A) + (1 - t) * E(B)``) written as a small reference, compared bit for bit with the
engine's (added tokenizer words, embedding rows). From the mirror: the demo's own ``add_task``
and the public pipelines' ``_encode_prompt`` with the public tokenizer wrapper and ``add_tokens``.
"""

from __future__ import annotations

import pytest
import torch

import powerpaint_public
from powerpaint_public import plain_tokenizer, public_text_encoder

engine, public, tiny_root = powerpaint_public.engine, powerpaint_public.public, powerpaint_public.tiny_root  # the shared fixtures
from diffcompose.methods.powerpaint.prompts import TASK_TOKENS, VECTORS_PER_TOKEN, task_prompts

Q = ", worst quality, low quality, normal quality, bad quality, blurry "

#: (task, version, prompt, negative) -> (positive A, B), (negative A, B), base, base negative: the demo's strings.
EXPECTED = {
    ("context", 1, "", ""): (("empty scene blur  P_ctxt",) * 2, (" P_obj",) * 2, "", ""),
    ("outpaint", 1, "sky", "text"): (("empty scene blur sky P_ctxt",) * 2, ("text P_obj",) * 2, "sky", "text"),
    ("object", 1, "a red chair", ""): (("a red chair P_obj",) * 2, (Q + "P_obj",) * 2, "a red chair", ""),
    ("shape", 1, "a vase", "dark"): (("a vase P_shape", "a vase P_ctxt"), ("dark" + Q + "P_shape", "dark" + Q + "P_ctxt"),
                                     "a vase", "dark"),
    ("context", 2, "", ""): ((" P_ctxt",) * 2, (" P_obj",) * 2, " empty scene blur", ""),
    ("outpaint", 2, "sky", "text"): ((" P_ctxt",) * 2, (" P_obj",) * 2, "sky empty scene", "text"),
    ("object", 2, "a red chair", "x"): ((" P_obj",) * 2, ("P_obj",) * 2, "a red chair", "x"),
    ("shape", 2, "a vase", ""): ((" P_shape", " P_ctxt"), ("P_shape", "P_ctxt"), "a vase", ""),
}

#: The demo's task names for ours.
DEMO_TASK = {"context": "object-removal", "outpaint": "image-outpainting", "object": "text-guided",
             "shape": "shape-guided"}


def _ours(case):
    task, version, prompt, negative = case
    return task_prompts(task, prompt, negative, version)


@pytest.mark.parametrize("case", list(EXPECTED), ids=lambda c: f"{c[0]}-v{c[1]}")
def test_task_prompts_are_the_demos_strings(case) -> None:
    got = _ours(case)
    pos, neg, base, base_neg = EXPECTED[case]
    assert (got.positive, got.negative, got.base, got.base_negative) == (pos, neg, base, base_neg)


@pytest.mark.parametrize("case", list(EXPECTED), ids=lambda c: f"{c[0]}-v{c[1]}")
def test_task_prompts_are_the_demo_codes(public, case) -> None:
    task, version, prompt, negative = case
    if version == 2:  # the demo's predict() appends these before add_task, for v2 only
        prompt += {"outpaint": " empty scene", "context": " empty scene blur"}.get(task, "")
    a, b, na, nb = public.add_task(prompt, negative, DEMO_TASK[task], f"ppt-v{version}")
    got = _ours(case)
    assert (got.positive, got.negative) == ((a, b), (na, nb))
    if version == 2:  # and hands the (suffixed) prompt and the user's negative to the base UNet
        assert (got.base, got.base_negative) == (prompt, negative)


class _Splice(torch.nn.Module):
    """The public embedding wrapper, written out: ids past the vocabulary look up 0 and each run of a
    placeholder's ten ids is replaced by its learned vectors."""

    def __init__(self, base: torch.nn.Embedding, vectors: dict[int, torch.Tensor]) -> None:
        super().__init__()
        self.base, self.vectors = base, vectors  # first id of a placeholder -> its (10, D) vectors

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        vocab = self.base.weight.shape[0]
        out = self.base(torch.where(ids >= vocab, torch.zeros_like(ids), ids))
        rows = []
        for seq, emb in zip(ids, out):
            parts, i = [], 0
            while i < len(seq):
                start = int(seq[i])
                if start in self.vectors:
                    parts.append(self.vectors[start])
                    i += VECTORS_PER_TOKEN
                else:
                    parts.append(emb[i:i + 1])
                    i += 1
            rows.append(torch.cat(parts))
        return torch.stack(rows)


def _reference_encoder(ours, vocab: int) -> torch.nn.Module:
    """A plain-vocabulary copy of ``ours`` whose embedding layer is :class:`_Splice` (the public path)."""
    import copy

    ref = copy.deepcopy(ours)
    weight = ours.get_input_embeddings().weight.detach()
    base = torch.nn.Embedding(vocab, weight.shape[1])
    base.weight.data.copy_(weight[:vocab])
    vectors = {vocab + i * VECTORS_PER_TOKEN: weight[vocab + i * VECTORS_PER_TOKEN: vocab + (i + 1) * VECTORS_PER_TOKEN]
               for i in range(len(TASK_TOKENS))}
    ref.set_input_embeddings(_Splice(base, vectors))
    return ref


def _written_out_encode(tokenizer, encoder, text: str) -> torch.Tensor:
    for p in TASK_TOKENS:  # the wrapper's text replacement, in the order the tokens were added
        if p in text:
            text = text.replace(p, " ".join(f"{p}_{i}" for i in range(VECTORS_PER_TOKEN)))
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids)[0]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("task,t", [("context", 1.0), ("outpaint", 1.0), ("object", 1.0), ("shape", 0.3)])
def test_task_embeddings_bit_exact_with_the_written_out_public_path(engine, version, task, t) -> None:
    pp = engine.model_for(version)
    prompts = task_prompts(task, "a red chair" if task in ("object", "shape") else "", "blurry", version)
    ours = engine.task_context(pp, prompts, t, guided=True)
    words = pp.sd.tokenizer.convert_tokens_to_ids([f"{TASK_TOKENS[0]}_0"])[0]
    ref = _reference_encoder(pp.task_encoder, words)
    tok = pp.sd.tokenizer

    def pair(a: str, b: str) -> torch.Tensor:
        return _written_out_encode(tok, ref, a) * t + (1 - t) * _written_out_encode(tok, ref, b)

    expected = torch.cat([pair(*prompts.negative), pair(*prompts.positive)])
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("version,task,t", [(1, "context", 1.0), (1, "shape", 0.0), (2, "object", 1.0),
                                            (2, "shape", 0.3)])
def test_task_embeddings_bit_exact_with_the_public_encode_prompt(public, engine, tmp_path, version, task, t
                                                                 ) -> None:
    import types

    pp = engine.model_for(version)
    tok, text = public_text_encoder(public, pp.task_encoder,
                                    plain_tokenizer(pp.sd.root / "tokenizer", tmp_path / "tok"))
    prompt = "a red chair" if task in ("object", "shape") else ""
    if version == 2 and task == "context":
        prompt += " empty scene blur"
    a, b, na, nb = public.add_task(prompt, "blurry", DEMO_TASK[task], f"ppt-v{version}")
    pipeline = public.v1.StableDiffusionInpaintPipeline if version == 1 else \
        public.v2.StableDiffusionPowerPaintBrushNetPipeline
    fake = types.SimpleNamespace(tokenizer=tok, text_encoder=text, text_encoder_brushnet=text, unet=None)
    with torch.no_grad():
        expected = pipeline._encode_prompt(fake, a, b, t, torch.device("cpu"), 1, True, na, nb, t)
    ours = engine.task_context(pp, task_prompts(task, "a red chair" if task != "context" else "", "blurry", version),
                               t, guided=True)
    assert torch.equal(ours, expected)


def test_the_fitting_degree_slides_from_context_to_shape(engine) -> None:
    """1: the shape prompt alone; 0: the context prompt alone (not the other way round)."""
    from diffcompose.methods.powerpaint.tokens import encode_text

    pp = engine.model_for(1)
    prompts = task_prompts("shape", "a vase", "", 1)
    shape = encode_text(pp.sd.tokenizer, pp.task_encoder, "a vase P_shape", engine.device)
    ctxt = encode_text(pp.sd.tokenizer, pp.task_encoder, "a vase P_ctxt", engine.device)
    assert not torch.equal(shape, ctxt)
    assert torch.equal(engine.task_context(pp, prompts, 1.0, guided=False), shape)
    assert torch.equal(engine.task_context(pp, prompts, 0.0, guided=False), ctxt)
