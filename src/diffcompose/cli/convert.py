"""``convert``: original checkpoints -> our safetensors layout (``convert pbe CKPT OUT_DIR``)."""

from __future__ import annotations

import argparse
from pathlib import Path


#: Checkpoint kind -> (module, function) of its converter, imported only once the arguments check out.
CONVERTERS = {"pbe": ("diffcompose.methods.pbe.convert", "convert_pbe"),
              "anydoor": ("diffcompose.methods.anydoor.convert", "convert_anydoor")}


def run_convert(args: argparse.Namespace) -> None:
    import importlib

    from diffcompose.errors import InputError
    from diffcompose.outdir import check_out_dir

    # Everything the user can get wrong is checked before torch is imported (seconds).
    if not args.checkpoint.is_file():
        raise InputError(f"checkpoint not found: {args.checkpoint}")
    if args.like is not None and not args.like.is_dir():
        raise InputError(f"--like directory not found: {args.like}")
    check_out_dir(args.out_dir, [args.checkpoint] + ([args.like] if args.like else []), force=args.force)
    module, name = CONVERTERS[args.kind]
    convert = getattr(importlib.import_module(module), name)
    print(convert(args.checkpoint, args.out_dir, like=args.like, force=args.force))


def _arguments(p: argparse.ArgumentParser, like_help: str) -> None:
    """CKPT, OUT_DIR, --like and --force: the same for every kind."""
    p.add_argument("checkpoint", type=Path, metavar="CKPT")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--like", type=Path, default=None, help=like_help)
    p.add_argument("--force", action="store_true",
                   help="replace OUT_DIR if it exists and is a model folder this tool wrote (never any other folder)")
    p.set_defaults(func=run_convert)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an original checkpoint into a model directory (safetensors)",
                       description="Convert a published checkpoint into a directory our engines load with --model.")
    kinds = p.add_subparsers(title="checkpoint kinds", metavar="KIND", parser_class=type(p), dest="kind", required=True)
    q = kinds.add_parser("pbe", help="Paint-by-Example (model.diffusion_model.*, cond_stage_model.*, ...)",
                         description="Convert the original Paint-by-Example checkpoint (.ckpt, read with "
                                     "weights_only: no code in it runs; or .safetensors) into OUT_DIR with "
                                     "unet/, vae/, image_encoder/ and scheduler/ in safetensors.")
    _arguments(q, "take the component configs from this model directory (default: the published geometry: "
                  "SD1.x UNet with 9 input channels, SD VAE, CLIP ViT-L/14)")
    a = kinds.add_parser("anydoor", help="AnyDoor (model.diffusion_model.*, control_model.*, cond_stage_model.*, ...)",
                         description="Convert the public AnyDoor checkpoint (.ckpt, read with weights_only and "
                                     "memory-mapped: no code in it runs, its optimizer state is never read; or "
                                     ".safetensors) into OUT_DIR with unet/, controlnet/, image_encoder/ (DINOv2), "
                                     "id_projector/, vae/ and scheduler/ in safetensors.")
    _arguments(a, "take the UNet, VAE and scheduler configs from this AnyDoor directory (default: the "
                  "published geometry: SD2.1 UNet, SD VAE; DINOv2's size is read from the weights)")
