"""Uni-paint (Yang et al., ACM MM 2023): one text-to-image Stable Diffusion, briefly fine-tuned on the
known region of the user's own photo, then inpainting unconditionally (remove), from text (inpaint),
from a coloured stroke (inpaint --stroke) or from an exemplar (paint), with masked attention."""
