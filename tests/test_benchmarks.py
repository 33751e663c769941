"""Every script in benchmarks/ runs at its smallest size and one round, so none can rot unseen.

The README quotes figures from these scripts; nothing else in the suite runs them, and one
(``freecompose_speed.py``) once crashed for months after the code under it changed. Each script
runs here as a user runs it (a subprocess of this interpreter, this checkout's ``src`` first on
the path, the network off) with arguments that make it short, and must exit 0 and print its
usual table or summary lines. The scripts are found by a glob: a new script without an entry in
:data:`SMOKE` fails :func:`test_benchmark_smoke_run` until it gets one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO, TESTDATA

BENCHMARKS = REPO / "benchmarks"


@dataclass(frozen=True)
class Smoke:
    """How one script runs briefly: its arguments (``{testdata}`` and ``{tmp}`` filled in) and what it must print."""

    args: tuple[str, ...]
    expect: tuple[str, ...]  # regular expressions, each found in stdout
    testdata: bool = False  # skipped without ../shared/testdata
    slow: bool = False  # builds torch models or starts servers: more than a few seconds on 2 CPU cores
    needs: tuple[str, ...] = ()  # importable modules it needs (skipped without them)
    wrote: dict[str, int] = field(default_factory=dict)  # files under {tmp} and their expected line counts


SMOKE: dict[str, Smoke] = {
    "anydoor_preprocess.py": Smoke(
        ("--repeats", "1", "--testdata", "{testdata}"),
        (r"reference \d+x\d+, scene \d+x\d+", r"prepare_reference: [\d.]+ ms", r"build_hint: [\d.]+ ms",
         r"paste_result: [\d.]+ ms"),
        testdata=True),
    "anydoor_speed.py": Smoke(
        ("--shape", "tiny", "--size", "64", "--steps", "1", "--rounds", "1"),
        (r"round 1 batched +[\d.]+ ms/step", r"round 1 two-pass +[\d.]+ ms/step",
         r"ours \(batched\) [\d.]+ ms/step, two-pass [\d.]+ ms/step, ratio [\d.]+",
         r"published model parameters in float32: [\d.]+ GiB"),
        slow=True, needs=("torch", "diffusers", "transformers")),
    "brushnet_speed.py": Smoke(
        ("--small", "--size", "64", "--steps", "2", "--rounds", "1"),
        (r"tiny shapes, 64x64, ddim", r"per step: ours [\d.]+ ms, bare [\d.]+ ms",
         r"BrushNet overhead over the bare inpainting UNet step: ours x[\d.]+"),
        slow=True, needs=("torch", "diffusers")),
    "freecompose_gradients.py": Smoke(
        ("--shape", "tiny", "--size", "64"),
        (r"tiny-shaped random weights, 64x64", r"\| remove \| [\d.e+-]+ \| [\d.e+-]+ \|",
         r"\| harmonize \| [\d.e+-]+ \| [\d.e+-]+ \|"),
        slow=True, needs=("torch", "diffusers", "torchmetrics")),
    "freecompose_speed.py": Smoke(
        ("--shape", "tiny", "--sizes", "64", "--rounds", "1"),
        tuple(rf"\s64  {row} +[\d.]+ s +x[\d.]+ +peak +\d+ MiB" for row in
              ("unet", "remove-dds", "harmonize-dds", "compose", "perceptual", "remove", "harmonize")),
        slow=True, needs=("torch", "diffusers")),
    "make_manifest.py": Smoke(
        ("-n", "3", "--harmonize", "-o", "{tmp}/manifest.jsonl", "--testdata", "{testdata}"),
        (r"manifest\.jsonl",), testdata=True, wrote={"manifest.jsonl": 3}),
    "mutations.py": Smoke(
        ("--only", "pbe-training-reference-not-bilinear"),
        (r"baseline: the named tests pass on the unchanged source", r"caught 1/1"),
        slow=True, needs=("torch",)),
    "pbe_speed.py": Smoke(
        ("--shape", "tiny", "--size", "64", "--steps", "2", "--rounds", "1"),
        (r"shape tiny, 64x64, plms, 2 steps, best of 1",
         r"per step: ours [\d.]+ ms, diffusers [\d.]+ ms, ratio [\d.]+"),
        slow=True, needs=("torch", "diffusers", "transformers")),
    "powerpaint_speed.py": Smoke(
        ("--shape", "tiny", "--size", "64", "--steps", "2", "--rounds", "1"),
        (r"shape tiny, 64x64, ddim, 2 steps, best of 1",
         r"v1 per step: ours [\d.]+ ms, bare UNet [\d.]+ ms \(ours/bare [\d.]+\)",
         r"v2 per step: ours [\d.]+ ms, bare UNet [\d.]+ ms \(ours/bare [\d.]+\)"),
        slow=True, needs=("torch", "diffusers", "transformers")),
    # quality and removal_tradeoff fall back to scikit-image photos without the test data
    "quality.py": Smoke(
        ("--limit", "1", "--per-photo", "1", "--max-side", "128", "--speed-repeats", "1",
         "--engines", "classical:telea,classical:reinhard,objectstitch", "--tasks", "remove,harmonize,insert",
         "--model", "tiny", "--opt", "steps=2", "--opt", "resolution=64", "--metric-models", "tiny",
         "--testdata", "{testdata}"),
        (r"\| mean-fill \(baseline\) \|", r"\| classical:telea \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|",
         r"\| engine \| s \(wall\) \| s \(CPU\) \|", r"\| composite \(baseline\) \|",
         r"\| classical:reinhard \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|",
         r"\| engine \| bg-PSNR \(dB\) ↑ \| CLIP-I ↑ \| DINO ↑ \| s / image \|",
         r"\| objectstitch steps=2 resolution=64 \| [\d.]+ \| [\d.-]+ \| [\d.-]+ \| [\d.]+ \|"),
        slow=True, needs=("torch", "diffusers", "transformers")),
    "removal_tradeoff.py": Smoke(
        ("--limit", "1", "--per-photo", "1", "--max-side", "128", "--testdata", "{testdata}"),
        (r"\| patchmatch \| [\d.]+", r"\| 0\.5 ns \+ 0\.5 patchmatch \|", r"\| patchmatch gated to ns, t 24 \|"),
        slow=True),
    "sam_speed.py": Smoke(
        ("--model", "tiny", "--size", "64x48"),
        (r"segment 64x48 \(box \+ 1 click\(s\)\): [\d.]+ s \(image encoder run\)",
         r"segment 64x48 \(box \+ 2 click\(s\)\): [\d.]+ s \(embedding reused\)"),
        slow=True, needs=("torch", "transformers")),
    "server_load.py": Smoke(
        ("--clients", "1", "--requests", "1", "--size", "64", "--queue-size", "1", "--burst", "2",
         "--ratio-runs", "1", "--startup-runs", "1"),
        (r"startup: launch to URL line, 1 starts", r"load: 1 clients x 1 classical removals .* failed 0",
         r"burst: 2 simultaneous submissions .* failed 0", r"latency: HTTP \d+ ms vs in-process \d+ ms"),
        slow=True, needs=("fastapi", "uvicorn", "httpx")),
}

SCRIPTS = sorted(path.name for path in BENCHMARKS.glob("*.py"))


def _param(script: str):
    smoke = SMOKE.get(script)
    return pytest.param(script, marks=[pytest.mark.slow] if smoke is not None and smoke.slow else [])


def _environment() -> dict[str, str]:
    """This checkout's sources first (not an installed copy) and no network."""
    path = os.pathsep.join([str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize("script", [_param(s) for s in SCRIPTS])
def test_benchmark_smoke_run(script: str, tmp_path: Path) -> None:
    smoke = SMOKE.get(script)
    if smoke is None:
        pytest.fail(f"benchmarks/{script} has no smoke run: add its shortest arguments to SMOKE in "
                    f"{Path(__file__).name}")
    if smoke.testdata and not (TESTDATA / "manifest.json").exists():
        pytest.skip("../shared/testdata is not present")
    for module in smoke.needs:
        pytest.importorskip(module)
    args = [a.format(testdata=TESTDATA, tmp=tmp_path) for a in smoke.args]
    run = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=tmp_path, env=_environment(),
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    for pattern in smoke.expect:
        assert re.search(pattern, run.stdout), f"no line matching {pattern!r} in:\n{run.stdout}"
    for name, lines in smoke.wrote.items():
        assert len((tmp_path / name).read_text().splitlines()) == lines, name


def test_every_smoke_entry_names_a_script() -> None:
    """An entry left behind by a renamed or removed script would hide that the new name has none."""
    assert sorted(set(SMOKE) - set(SCRIPTS)) == []
