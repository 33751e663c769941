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

from diffcompose.errors import InputError

#: The families that become the model (Paint-by-Example's converter maps each of them).
MAPPED = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.",
          "cond_stage_model.mapper.resblocks.", "cond_stage_model.final_ln.", "proj_out.", "learnable_vector")
#: The DDPM's noise schedule, stored as buffers (ours is the scheduler config): not weights.
SCHEDULE = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
            "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
            "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
            "logvar")


def unmapped_keys(keys: list[str]) -> list[str]:
    """The keys of no family this converter maps or knowingly skips (the schedule buffers)."""
    return [k for k in keys if not k.startswith(MAPPED) and k not in SCHEDULE]


def convert_objectstitch(checkpoint: Path, out_dir: Path, *, like: Path | None = None, force: bool = False) -> Path:
    """Write ``out_dir`` (unet/, vae/, image_encoder/ with the adaptor over every token, scheduler/)."""
    from diffcompose.methods.objectstitch.components import TOKEN_MODE
    from diffcompose.methods.pbe.convert import convert_pbe, load_checkpoint

    if Path(checkpoint).is_file():
        state = load_checkpoint(Path(checkpoint))
        unknown = unmapped_keys(list(state))
        if unknown:
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            raise InputError(f"{checkpoint} holds weights of no ObjectStitch part: {', '.join(unknown[:3])}{more}")
        del state
    return convert_pbe(checkpoint, out_dir, like=like, force=force, what="ObjectStitch", tool="convert objectstitch",
                       tokens=TOKEN_MODE)
