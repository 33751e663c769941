"""``convert``: original checkpoints -> our safetensors layout (``convert pbe CKPT OUT_DIR``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_convert_pbe(args: argparse.Namespace) -> None:
    from diffcompose.errors import InputError
    from diffcompose.outdir import check_out_dir

    # Everything the user can get wrong is checked before torch is imported (seconds).
    if not args.checkpoint.is_file():
        raise InputError(f"checkpoint not found: {args.checkpoint}")
    if args.like is not None and not args.like.is_dir():
        raise InputError(f"--like directory not found: {args.like}")
    check_out_dir(args.out_dir, [args.checkpoint] + ([args.like] if args.like else []), force=args.force)
    from diffcompose.methods.pbe.convert import convert_pbe

    print(convert_pbe(args.checkpoint, args.out_dir, like=args.like, force=args.force))


def run_convert_anydoor(args: argparse.Namespace) -> None:
    from diffcompose.errors import InputError
    from diffcompose.outdir import check_out_dir

    if not args.checkpoint.is_file():
        raise InputError(f"checkpoint not found: {args.checkpoint}")
    if args.like is not None and not args.like.is_dir():
        raise InputError(f"--like directory not found: {args.like}")
    check_out_dir(args.out_dir, [args.checkpoint] + ([args.like] if args.like else []), force=args.force)
    from diffcompose.methods.anydoor.convert import convert_anydoor

    print(convert_anydoor(args.checkpoint, args.out_dir, like=args.like, force=args.force))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an original checkpoint into a model directory (safetensors)",
                       description="Convert a published checkpoint into a directory our engines load with --model.")
    kinds = p.add_subparsers(title="checkpoint kinds", metavar="KIND", parser_class=type(p), dest="kind", required=True)
    q = kinds.add_parser("pbe", help="Paint-by-Example (model.diffusion_model.*, cond_stage_model.*, ...)",
                         description="Convert the original Paint-by-Example checkpoint (.ckpt, read with "
                                     "weights_only: no code in it runs; or .safetensors) into OUT_DIR with "
                                     "unet/, vae/, image_encoder/ and scheduler/ in safetensors.")
    q.add_argument("checkpoint", type=Path, metavar="CKPT")
    q.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    q.add_argument("--like", type=Path, default=None,
                   help="take the component configs from this model directory (default: the published geometry: "
                        "SD1.x UNet with 9 input channels, SD VAE, CLIP ViT-L/14)")
    q.add_argument("--force", action="store_true",
                   help="replace OUT_DIR if it exists and is a model folder this tool wrote (never any other folder)")
    q.set_defaults(func=run_convert_pbe)
    a = kinds.add_parser("anydoor", help="AnyDoor (model.diffusion_model.*, control_model.*, cond_stage_model.*, ...)",
                         description="Convert the public AnyDoor checkpoint (.ckpt, read with weights_only and "
                                     "memory-mapped: no code in it runs, its optimizer state is never read; or "
                                     ".safetensors) into OUT_DIR with unet/, controlnet/, image_encoder/ (DINOv2), "
                                     "id_projector/, vae/ and scheduler/ in safetensors.")
    a.add_argument("checkpoint", type=Path, metavar="CKPT")
    a.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    a.add_argument("--like", type=Path, default=None,
                   help="take the UNet, VAE and scheduler configs from this AnyDoor directory (default: the "
                        "published geometry: SD2.1 UNet, SD VAE; DINOv2's size is read from the weights)")
    a.add_argument("--force", action="store_true",
                   help="replace OUT_DIR if it exists and is a model folder this tool wrote (never any other folder)")
    a.set_defaults(func=run_convert_anydoor)
