"""Convert the public Paint-by-Sketch checkpoint into our (diffusers) layout.

The public checkpoint is a Lightning checkpoint of the same ``LatentDiffusion`` as
Paint-by-Example's (its ``scripts/modify_checkpoints.py`` widens Paint-by-Example's first UNet
convolution with zero weights for the new channels): ``model.diffusion_model.*`` (the UNet,
``input_blocks.0.0.weight`` of shape ``(320, 12, 3, 3)``), ``first_stage_model.*``,
``cond_stage_model.*``, ``proj_out.*`` and ``learnable_vector``. So Paint-by-Example's converter
reads it (:func:`~diffcompose.methods.pbe.convert.convert_pbe`, with a 12-channel UNet). Here
every key family of the file is checked first: a key of no known family (an edge head of a
``target_edge_type`` run, another model's checkpoint) is one line, not a silently dropped weight.
"""

from __future__ import annotations

from pathlib import Path

from diffcompose.errors import InputError

#: The families that become the model (Paint-by-Example's converter maps each of them).
MAPPED = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.",
          "cond_stage_model.mapper.", "cond_stage_model.final_ln.", "proj_out.", "learnable_vector")


def convert_pbsketch(checkpoint: Path, out_dir: Path, *, like: Path | None = None, force: bool = False) -> Path:
    """Write ``out_dir`` (unet/ with 12 input channels, vae/, image_encoder/, scheduler/) from ``checkpoint``."""
    from diffcompose.methods.pbe.convert import convert_pbe, refuse_unknown_keys
    from diffcompose.methods.pbsketch.components import IN_CHANNELS

    def check(state: dict) -> None:
        refuse_unknown_keys(state, MAPPED, checkpoint, "Paint-by-Sketch")
        first = state.get("model.diffusion_model.input_blocks.0.0.weight")
        if first is not None and first.shape[1] != IN_CHANNELS:
            raise InputError(f"{checkpoint} is not a Paint-by-Sketch checkpoint: its UNet takes {first.shape[1]} "
                             f"input channels, not {IN_CHANNELS} (a Paint-by-Example one: convert pbe)")

    return convert_pbe(checkpoint, out_dir, like=like, force=force, in_channels=IN_CHANNELS,
                       what="Paint-by-Sketch", tool="convert pbsketch", check=check, engine="pbsketch")
