"""``diffcompose batch MANIFEST -o OUT_DIR``: every job of a JSON-lines manifest, resumable.

Exit codes: 0 when the run finished, even with some failed items (the summary line
``N ok, M failed, K skipped; results in ...`` is on stderr, the output folder on stdout);
1 when no item of the manifest is done (every item that ran failed, none was done before);
2 for an unusable manifest, option or output folder
(one line, nothing run); 130 when cancelled (Ctrl-C, SIGTERM: finished items stay recorded,
a rerun resumes). Under ``accelerate launch`` only the main process prints and draws the bar.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffcompose.cli.common import add_limits, add_runtime
from diffcompose.errors import DiffComposeError


class BatchFailed(DiffComposeError):
    """No item is done: every one failed (exit 1: the run itself worked, none of its items did)."""

    exit_code = 1


class BatchCancelled(DiffComposeError):
    """Cancelled with finished items kept (exit 130)."""

    exit_code = 130


def _main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") in ("", "0")


def run_batch_command(args: argparse.Namespace) -> None:
    from diffcompose.batch import read_results, run_batch
    from diffcompose.errors import Cancelled
    from diffcompose.progress import TqdmBar

    main = _main_process()
    bar = TqdmBar(args.progress and main)
    try:
        summary = run_batch(args.manifest, args.output, seed=args.seed, device=args.device, dtype=args.dtype,
                            force=args.force, on_progress=bar, max_pixels=args.max_pixels)
    except (Cancelled, KeyboardInterrupt):
        bar.close()
        from diffcompose.batch.runner import batch_of

        results = args.output / "results.jsonl"
        if batch_of(args.output) != str(args.manifest.expanduser().resolve()) or not results.is_file():
            raise  # stopped before this batch's folder was set up: nothing of it was written
        kept = sum(r.get("status") == "ok" for r in read_results(args.output))
        raise BatchCancelled(f"cancelled; {kept} finished item(s) stay recorded in {results}: "
                             "rerun the same command to resume") from None
    bar.close()
    if not main:
        return
    sys.stderr.write(f"diffcompose: {summary.line()}\n")
    if summary.failed and not (summary.ok or summary.skipped):
        first = next((r for r in read_results(summary.out_dir) if r.get("status") == "error"), {})
        raise BatchFailed(f"all {summary.failed} item(s) failed (first: {first.get('id')}: {first.get('error')})")
    print(summary.out_dir, flush=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch", help="run every job of a JSON-lines manifest into a folder (resumable; shards under accelerate)",
        description="Run every job of MANIFEST (JSON lines: task, engine, inputs relative to the manifest, options, "
                    "optional id, seed, ground_truth) into OUT_DIR: outputs/<id>.png and results.jsonl (one line per "
                    "item: status, outputs, engine, seconds, the error of a bad item). A bad item never stops the run. "
                    "Rerunning into the same folder skips finished items and retries failed ones. Under "
                    "'accelerate launch -m diffcompose batch ...' the items are shared out across the processes.",
        epilog="Exit codes: 0 run finished (some items may have failed: see the summary on stderr); 1 no item "
               "is done (all failed); 2 unusable manifest or output folder; 130 cancelled (finished items are kept).")
    p.add_argument("manifest", type=Path, metavar="MANIFEST", help="JSON-lines manifest (one job per line)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR",
                   help="output folder (new, or a batch folder of the same manifest to resume)")
    p.add_argument("--seed", type=int, default=0, help="seed of the jobs that give none (default: 0)")
    p.add_argument("--force", action="store_true",
                   help="replace OUT_DIR if it is a folder this tool wrote, and start over (never any other folder)")
    add_runtime(p)
    add_limits(p)
    p.set_defaults(func=run_batch_command)
