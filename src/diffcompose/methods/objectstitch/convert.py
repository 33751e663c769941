"""Convert the public ObjectStitch checkpoint (bcmi's ``ObjectStitch.pth``) into our (diffusers) layout.

The public file is the ``state_dict`` of the same ``LatentDiffusion`` class as
Paint-by-Example's, with the same key families: ``model.diffusion_model.*`` (the 9-channel
UNet), ``first_stage_model.*`` (the VAE), ``cond_stage_model.transformer.*`` (HF CLIP ViT-L/14
vision), ``cond_stage_model.mapper.resblocks.{i}.*`` and ``cond_stage_model.final_ln.*`` (the
content adaptor's transformer, 5 one-head blocks, and its LayerNorm), ``proj_out.*`` (1024 ->
768) and ``learnable_vector`` (the unconditional token), and the noise schedule as buffers.
Only what the adaptor reads differs (every token), which the weights do not show: so
Paint-by-Example's converter maps every family, with ``token_mode: patches`` written into the
image encoder's config. Every key is checked first: one of no known family is one line. A
MureObjectStitch fine-tune has the same keys and converts the same way.
"""

from __future__ import annotations

from pathlib import Path


#: The families that become the model (Paint-by-Example's converter maps each of them).
MAPPED = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.",
          "cond_stage_model.mapper.resblocks.", "cond_stage_model.final_ln.", "proj_out.", "learnable_vector")


def convert_objectstitch(checkpoint: Path, out_dir: Path, *, like: Path | None = None, force: bool = False) -> Path:
    """Write ``out_dir`` (unet/, vae/, image_encoder/ with the adaptor over every token, scheduler/)."""
    from diffcompose.methods.objectstitch.components import TOKEN_MODE
    from diffcompose.methods.pbe.convert import convert_pbe, refuse_unknown_keys

    def check(state: dict) -> None:
        refuse_unknown_keys(state, MAPPED, checkpoint, "ObjectStitch")

    return convert_pbe(checkpoint, out_dir, like=like, force=force, what="ObjectStitch", tool="convert objectstitch",
                       tokens=TOKEN_MODE, check=check, engine="objectstitch")
