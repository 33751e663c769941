"""PowerPaint (Zhuang et al., ECCV 2024): one inpainting model for object removal, text-guided
object insertion, shape-guided insertion and outpainting, steered by learned task tokens.

``options`` (light) registers the engine; ``prompts`` assembles the per-task prompts (light);
``tokens`` adds the task tokens to a tokenizer and a CLIP text encoder and encodes the
interpolated prompt pairs; ``engine`` samples (v1: an SD-inpainting UNet; v2: BrushNet beside a
frozen SD-1.5 UNet); ``convert`` reads the public checkpoints; ``tiny`` builds ``--model tiny``;
``weights`` says, without torch, whether public weights are in the local cache (``auto``).
"""
