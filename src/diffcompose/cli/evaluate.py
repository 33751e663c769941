"""``diffcompose evaluate RESULTS``: metrics tables and an HTML report for a batch output.

The work is :func:`diffcompose.evaluation.evaluate.evaluate`; this module only parses flags
(no torch import at ``--help``, nor for the pixel metrics) and prints the report's path as the last line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_SUBDIR = "evaluation"


def run_evaluate(args: argparse.Namespace) -> None:
    from diffcompose.evaluation.evaluate import Models, evaluate, parse_metrics

    parse_metrics(args.metrics)  # a typo fails before anything is read
    if args.device is not None:  # so does a device that is not there (torch is imported only when one is named)
        from diffcompose.models.device import pick_device

        pick_device(args.device)
    source: Path = args.results
    out = args.output_dir
    if out is None:
        out = (source if source.is_dir() else source.parent) / DEFAULT_SUBDIR
    models = Models(model_dir=args.model_dir, clip=args.clip_model, dino=args.dino_model, vgg=args.vgg,
                    inception=args.inception, device=args.device)
    from tqdm.auto import tqdm

    with tqdm(desc="evaluate", unit="item", disable=not args.progress) as bar:
        def step(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = evaluate(source, out, metrics=args.metrics, manifest=args.manifest, models=models,
                          force=args.force, on_item=step)
    print(report.parent / "metrics.csv")
    print(report.parent / "metrics.json")
    print(report, flush=True)


def register(sub: argparse._SubParsersAction) -> None:
    from diffcompose.evaluation.evaluate import ALL_METRICS

    p = sub.add_parser("evaluate", help="metrics (CSV, JSON) and an HTML report for a batch output",
                       description="Score every item of a 'diffcompose batch' output folder (or its results.jsonl, "
                                   "or a folder of outputs with --manifest) and write metrics.csv, metrics.json "
                                   "and report.html. Metrics that cannot run on an item (no ground truth, prompt "
                                   "or reference) are skipped for it with the reason.")
    p.add_argument("results", type=Path, help="batch output folder, its results.jsonl, or a folder of outputs")
    p.add_argument("-o", "--output-dir", type=Path, default=None,
                   help=f"folder for the tables and report (default: RESULTS/{DEFAULT_SUBDIR})")
    p.add_argument("--manifest", type=Path, default=None,
                   help="the manifest whose outputs RESULTS holds as <id>.png (when RESULTS is not a batch folder)")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated, from: {', '.join(ALL_METRICS)}; 'pixel' (the default) or 'all' (model "
                        "metrics whose weights are missing are then skipped; named ones missing fail with exit 3)")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="folder with the metric models: clip/, dinov2/, vgg16/ (save_pretrained or safetensors) "
                        "and pt_inception-2015-12-05-6726825d.pth")
    p.add_argument("--clip-model", default=None, help="CLIP for clip and clip-i: hub id or folder "
                                                      "(default: openai/clip-vit-large-patch14)")
    p.add_argument("--dino-model", default=None,
                   help="DINOv2 for dino: hub id or folder (default: facebook/dinov2-base)")
    p.add_argument("--vgg", default=None, help="VGG16 for lpips: hub id, folder or safetensors file "
                                               "(default: timm/vgg16.tv_in1k)")
    p.add_argument("--inception", default=None, help="FID Inception weights file (pytorch-fid's .pth)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu for the model metrics (default: best available)")
    p.add_argument("--force", action="store_true", help="replace an earlier evaluation folder")
    p.set_defaults(func=run_evaluate)
