"""The per-task prompts of PowerPaint, as its public demo assembles them (light: no torch).

PowerPaint learned three task prompts, each a placeholder word that the tokenizer expands to
ten learned token vectors: ``P_ctxt`` (fill with context: removal, outpainting), ``P_obj``
(an object described by text) and ``P_shape`` (an object filling the mask's shape). Every
request encodes two positive prompts A and B and two negative ones, and the UNet's context is
``t * A + (1 - t) * B`` (positive: ``t`` = the fitting degree; negative: the same ``t``). A
and B differ only for the shape task, where the fitting degree slides from the context task
(0: the object barely follows the shape) to the shape task (1: it fills it).

The strings below are the public demo's, character for character (including its missing and
doubled spaces): the embeddings are compared bit for bit with its assembly in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The task placeholders, in the order the public code adds them to the tokenizer (their token ids follow it).
TASK_TOKENS = ("P_ctxt", "P_shape", "P_obj")
#: Learned vectors per placeholder (``P_ctxt`` -> ``P_ctxt_0 ... P_ctxt_9``).
VECTORS_PER_TOKEN = 10
#: What v1 appends to the user's negative prompt for the object and shape tasks.
QUALITY_NEGATIVE = ", worst quality, low quality, normal quality, bad quality, blurry "

#: PowerPaint's tasks: context fill (remove, outpaint), text-guided object, shape-guided object.
CONTEXT, OBJECT, SHAPE = "context", "object", "shape"


@dataclass(frozen=True)
class TaskPrompts:
    """The four prompts of one request and the text the v2 base UNet reads.

    ``positive = (A, B)``, ``negative = (A, B)``: what the task-token text encoder encodes (then
    interpolated with the fitting degree). ``base``/``base_negative``: v2 only, the plain prompt
    pair of the frozen base UNet (no task tokens).
    """

    positive: tuple[str, str]
    negative: tuple[str, str]
    base: str
    base_negative: str


def task_prompts(task: str, prompt: str, negative_prompt: str, version: int) -> TaskPrompts:
    """The public demo's prompts for ``task`` (:data:`CONTEXT`, :data:`OBJECT` or :data:`SHAPE`).

    v2 first appends ``" empty scene"`` (outpainting) or ``" empty scene blur"`` (removal) to the
    user's prompt, and puts no user text before the task token (its user text goes to the base
    UNet); v1 puts the user's text before the token and, for removal and outpainting,
    ``"empty scene blur "`` before that.
    """
    if task not in (CONTEXT, OBJECT, SHAPE, "outpaint"):
        raise ValueError(f"unknown PowerPaint task {task!r}")
    if version == 2:
        if task == "outpaint":
            prompt = prompt + " empty scene"
        elif task == CONTEXT:
            prompt = prompt + " empty scene blur"
    pos = neg = ""
    if task in (CONTEXT, "outpaint"):
        if version == 1:
            pos, neg = "empty scene blur " + prompt, negative_prompt
        return TaskPrompts((pos + " P_ctxt", pos + " P_ctxt"), (neg + " P_obj", neg + " P_obj"), prompt,
                           negative_prompt)
    if version == 1:
        pos, neg = prompt, negative_prompt + QUALITY_NEGATIVE
    if task == SHAPE:
        return TaskPrompts((pos + " P_shape", pos + " P_ctxt"), (neg + "P_shape", neg + "P_ctxt"), prompt,
                           negative_prompt)
    return TaskPrompts((pos + " P_obj", pos + " P_obj"), (neg + "P_obj", neg + "P_obj"), prompt, negative_prompt)


def check_no_task_words(name: str, text: str) -> None:
    """Refuse user text that names a task placeholder: the tokenizer would expand it into learned
    vectors (and v2's base text encoder has none), so it is not text a user means."""
    from diffcompose.errors import InputError

    for token in TASK_TOKENS:
        if token.lower() in text.lower():
            raise InputError(f"{name} contains {token!r}, one of PowerPaint's task words; leave it out "
                             "(the task picks its own)")
