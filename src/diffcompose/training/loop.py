"""The one training loop every trainer runs (each engine's ``methods/<engine>/train.py``).

A trainer brings what is its own in a :class:`Recipe` (the module to train and its trained
parameters, the dataset, the loss of one micro-batch, the learning-rate schedule, what a
checkpoint holds, the export); this module owns the rest, the same for all:

* the run: one ``accelerate`` Accelerator (mixed precision, gradient accumulation; the same code
  on one device or data-parallel under ``accelerate launch``) and the output-folder guard
  (:func:`start_run`);
* the randomness: every draw of a micro-batch comes from ``_generator(seed, micro_step, rank)``
  and the data sampler hands out sample ids by ``(step, rank)`` (:class:`StepSampler`), so a run
  resumed from a checkpoint continues with exactly the loss curve it would have had;
* AdamW, the learning-rate schedule, gradient clipping, the optional EMA of the trained weights;
* checkpoints (``output_dir/checkpoint-NNNNNNN/``), written whole or not at all, in safetensors:
  the trained weights, the AdamW moments, the EMA weights and ``state.json`` (step, loss curves and,
  with fp16, the gradient scaler's state) (:func:`write_checkpoint`, :func:`read_checkpoint`);
* progress (one :class:`~diffcompose.progress.ProgressEvent` per optimizer step, main process only)
  and cancel checks (a cancel stops within one step; the checkpoints written so far stay);
* the export of ``output_dir/final/`` by the main process at the end.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from diffcompose.errors import InputError
from diffcompose.outdir import TRAINING, check_out_dir, mark, swap_in
from diffcompose.progress import CancelToken, Progress, ProgressCallback

log = logging.getLogger(__name__)

CKPT_PREFIX = "checkpoint-"
WEIGHTS_FILE = "model.safetensors"


# ----------------------------------------------------------------------------- randomness and data order

def _generator(seed: int, step: int, rank: int, salt: int = 0) -> torch.Generator:
    """The generator of micro-batch ``step`` on process ``rank``; ``salt`` keeps trainers' streams apart."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1009 + rank + salt)


class StepSampler(torch.utils.data.Sampler):
    """Sample ids of micro-batches ``start, start+1, ...`` for one process (never repeats, never ends)."""

    def __init__(self, start: int, batch: int, rank: int, world: int) -> None:
        self.start, self.batch, self.rank, self.world = start, batch, rank, world

    def __iter__(self) -> Iterator[int]:
        m = self.start
        while True:
            base = (m * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)
            m += 1


def step_loader(ds: torch.utils.data.Dataset, cfg: Any, start: int, acc: Any) -> torch.utils.data.DataLoader:
    """Batches for this process from optimizer step ``start`` on (see :class:`StepSampler`)."""
    return torch.utils.data.DataLoader(
        ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers, pin_memory=acc.device.type == "cuda",
        sampler=StepSampler(start * cfg.gradient_accumulation_steps, cfg.batch_size, acc.process_index,
                            acc.num_processes),
        persistent_workers=cfg.num_workers > 0)


# ----------------------------------------------------------------------------- learning rate, EMA, checkpoints

WARMUP_START = 1e-6  # Paint-by-Example's f_start: the first step's share of the learning rate


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The learning-rate multiplier of optimizer step ``step`` (0-based): linear from 1e-6 to 1 over
    ``warmup_steps``, then 1 (Paint-by-Example's ``LambdaLinearScheduler`` with its ``configs/v1.yaml``;
    AnyDoor's too)."""
    if step >= warmup_steps:
        return 1.0
    return WARMUP_START + (1.0 - WARMUP_START) * step / warmup_steps


class EMA:
    """Exponential moving average of the trained weights (what the final export holds when set)."""

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]], decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in named}

    @torch.no_grad()
    def update(self, named: list[tuple[str, torch.nn.Parameter]]) -> None:
        for n, p in named:
            self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)


def export_copy(module: torch.nn.Module, shadow: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """A float32 CPU copy of ``module`` to export, holding the EMA weights ``shadow`` when given (the
    module being trained is left as it is)."""
    import copy

    final = copy.deepcopy(module).cpu().float()
    if shadow is not None:
        params = dict(final.named_parameters())
        with torch.no_grad():
            for name, value in shadow.items():
                params[name].copy_(value)
    return final


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest finished checkpoint folder (``checkpoint-NNNNNNN``; never one still being written)."""
    ckpts = sorted(p for p in output_dir.glob(CKPT_PREFIX + "*")
                   if p.name[len(CKPT_PREFIX):].isdigit() and (p / "state.json").is_file())
    return ckpts[-1] if ckpts else None


def check_checkpoint(path: Path, weights_file: str = WEIGHTS_FILE, what: str = "training checkpoint") -> None:
    """Refuse (:class:`InputError`) a folder that is not a checkpoint with weights ``weights_file``."""
    if not (path / "state.json").is_file() or not (path / weights_file).is_file():
        raise InputError(f"not a {what} (no state.json / {weights_file}): {path}")


def write_checkpoint(path: Path, weights: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                     ema: EMA | None, state: dict, scaler: torch.amp.GradScaler | None = None,
                     weights_file: str = WEIGHTS_FILE) -> None:
    """A checkpoint folder for any trainer, written whole or not at all: ``weights_file`` (``weights``),
    ``optimizer.safetensors`` (the AdamW moments by parameter index), ``ema.safetensors`` (with EMA) and
    ``state.json`` (``state`` plus the fp16 gradient scaler's state, so a resumed run is exact)."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / weights_file))
    opt: dict[str, torch.Tensor] = {}
    for i, st in optimizer.state_dict()["state"].items():
        for k, v in st.items():
            opt[f"{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous().cpu()
    save_file(opt, str(tmp / "optimizer.safetensors"))
    if ema is not None:
        save_file({k: v.contiguous().cpu() for k, v in ema.shadow.items()}, str(tmp / "ema.safetensors"))
    if scaler is not None:
        state = {**state, "grad_scaler": scaler.state_dict()}
    (tmp / "state.json").write_text(json.dumps(state))
    swap_in(tmp, path)  # an older checkpoint of the same step goes only once this one is in place


def read_checkpoint(path: Path, optimizer: torch.optim.Optimizer, ema: EMA | None,
                    scaler: torch.amp.GradScaler | None = None, weights_file: str = WEIGHTS_FILE,
                    what: str = "training checkpoint") -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, state) of a :func:`write_checkpoint` folder; the optimizer, EMA and scaler are restored in place."""
    from safetensors.torch import load_file

    check_checkpoint(path, weights_file, what)
    weights = load_file(str(path / weights_file))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in load_file(str(path / "optimizer.safetensors")).items():
        i, _, name = key.partition(".")
        state.setdefault(int(i), {})[name] = v
    try:
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"checkpoint {path}: the optimizer state does not fit the configured model "
                         f"({str(exc).splitlines()[0]})") from None
    if ema is not None:
        if not (path / "ema.safetensors").is_file():
            raise InputError(f"checkpoint {path} has no EMA weights but ema_decay is set")
        ema.shadow = {k: v.float() for k, v in load_file(str(path / "ema.safetensors")).items()}
    info = json.loads((path / "state.json").read_text())
    if scaler is not None:
        if "grad_scaler" in info:
            scaler.load_state_dict(info["grad_scaler"])
        else:
            log.warning("checkpoint %s has no gradient scaler state (saved without fp16): the loss scale "
                        "starts afresh", path)
    return weights, info


# ----------------------------------------------------------------------------- the run

def start_run(cfg: Any, task: str) -> tuple[Any, Path]:
    """(Accelerator, output folder) of a run: the folder is checked (never one holding the data or
    written by something else; a run's own folder is reused) and marked as ``task``'s."""
    from accelerate import Accelerator

    acc = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.gradient_accumulation_steps)
    inputs = [Path(cfg.manifest)] + ([Path(cfg.image_root)] if cfg.image_root else [])
    out = check_out_dir(Path(cfg.output_dir), inputs, force=False, reuse=True, kind=TRAINING)
    if acc.is_main_process:
        out.mkdir(exist_ok=True)
        mark(out, task, TRAINING)
    return acc, out


def weight_dtype(cfg: Any, acc: Any) -> torch.dtype:
    """The precision of the frozen parts: the mixed-precision type, or float32 where accelerate has no
    native autocast for it (e.g. fp16 on a CPU, which then trains in float32)."""
    if not acc.native_amp:
        return torch.float32
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)


@dataclass
class Recipe:
    """What one method brings to :func:`fit`.

    ``model`` is the module accelerate wraps (its forward is the method's), already in the modes it
    trains in (frozen parts may stay in ``eval``); ``params`` are the
    trained parameters in the optimizer's order (the checkpoint's AdamW indices), ``named`` the same
    by name (EMA, export). ``micro_step(model, batch, generator)`` returns the loss to minimise,
    then any further logged terms: one tensor per name in ``curves`` (``state.json`` keys; the
    first is the loss). ``weights()`` is what a checkpoint holds, ``load_weights(weights, path)``
    puts a checkpoint's back, ``export(ema)`` writes ``output_dir/final`` (main process only) and
    returns its path (``None``: nothing is exported, as for a tuning inside a job).
    """

    task: str
    model: torch.nn.Module
    params: Sequence[torch.nn.Parameter]
    named: list[tuple[str, torch.nn.Parameter]]
    dataset: torch.utils.data.Dataset
    micro_step: Callable[[Any, dict, torch.Generator], Sequence[torch.Tensor]]
    lr_lambda: Callable[[int], float]
    weights: Callable[[], dict[str, torch.Tensor]]
    load_weights: Callable[[dict[str, torch.Tensor], Path], None]
    export: Callable[[EMA | None], Path | None]
    curves: tuple[str, ...] = ("losses",)
    salt: int = 0  # the trainer's own random streams (see :func:`_generator`)
    weights_file: str = WEIGHTS_FILE
    what: str = "training checkpoint"  # named in the error for a folder that is not one


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _resume(cfg: Any, out: Path, recipe: Recipe, optimizer: torch.optim.Optimizer, ema: EMA | None,
            scaler: Any) -> tuple[int, dict[str, list[float]]]:
    """(first step, curves so far): 0 and empty curves for a new run; for ``cfg.resume`` the checkpoint's
    step and curves, its weights, AdamW moments, EMA and loss scale put back in place."""
    resume = latest_checkpoint(out) if cfg.resume == "latest" else Path(cfg.resume) if cfg.resume else None
    if resume is None:
        return 0, {name: [] for name in recipe.curves}
    weights, info = read_checkpoint(resume, optimizer, ema, scaler, recipe.weights_file, recipe.what)
    recipe.load_weights(weights, resume)
    start = int(info["step"])
    log.info("resumed from %s at step %d", resume, start)
    return start, {name: list(info.get(name, []))[:start] for name in recipe.curves}


def fit(cfg: Any, acc: Any, out: Path, recipe: Recipe, *, on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None) -> dict[str, list[float]]:
    """Run (or resume, ``cfg.resume``: ``latest`` or a checkpoint folder) ``recipe`` to ``cfg.max_steps``;
    return every curve of :attr:`Recipe.curves` per optimizer step from step 0."""
    optimizer = torch.optim.AdamW(list(recipe.params), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    ema = EMA(recipe.named, cfg.ema_decay) if cfg.ema_decay is not None else None
    start, curves = _resume(cfg, out, recipe, optimizer, ema, acc.scaler)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", cfg.learning_rate)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.lr_lambda, last_epoch=start - 1)

    accum = cfg.gradient_accumulation_steps
    loader = step_loader(recipe.dataset, cfg, start, acc)
    model, optimizer = acc.prepare(recipe.model, optimizer)
    batches = iter(loader)
    params = list(recipe.params)
    progress = Progress(recipe.task, cfg.max_steps, on_progress if acc.is_main_process else None, cancel)
    progress.done = start
    progress.check()
    for step in range(start, cfg.max_steps):
        totals = torch.zeros(len(recipe.curves), dtype=torch.float64)
        for a in range(accum):
            batch = _to_device(next(batches), acc.device)
            gen = _generator(cfg.seed, step * accum + a, acc.process_index, recipe.salt)
            with acc.accumulate(model):
                terms = recipe.micro_step(model, batch, gen)
                acc.backward(terms[0])
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            now = torch.stack([t.detach().float() for t in terms])
            totals += acc.gather(now[None]).mean(0).cpu().double() / accum
        lr_sched.step()
        if ema is not None:
            ema.update(recipe.named)
        for name, value in zip(recipe.curves, totals.tolist()):
            curves[name].append(value)
        if (step + 1) % cfg.log_every == 0 and acc.is_main_process:
            extra = ", ".join(f"{name} {curves[name][-1]:.4f}" for name in recipe.curves[1:])
            log.info("step %d: loss %.4f (%slr %.2e)", step + 1, curves[recipe.curves[0]][-1],
                     extra + "; " if extra else "", lr_sched.get_last_lr()[0])
        if (cfg.checkpoint_every > 0 and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_steps)
                and acc.is_main_process):  # 0: no checkpoints (a tuning inside a job keeps nothing)
            write_checkpoint(out / f"{CKPT_PREFIX}{step + 1:07d}", recipe.weights(), optimizer, ema,
                             {"step": step + 1, **curves}, acc.scaler, recipe.weights_file)
        acc.wait_for_everyone()
        progress.step()
    if acc.is_main_process and start < cfg.max_steps:
        path = recipe.export(ema)
        if path is not None:  # None: nothing kept (a tuning inside a job)
            log.info("%s: trained model written to %s", recipe.task, path)
    # The DDP wrapper goes first, while the process group is still registered. Its C++ reducer
    # holds a reference to the group and is freed with the GIL held; were its reference the last,
    # the group's destructor would join gloo's worker threads under the GIL, and a worker freeing
    # a finished collective's Python tensors waits for the GIL: a deadlock (rare, timing-bound;
    # seen on rank 0 after rank 1 had exited). Freed here, the group's last reference goes in
    # ``destroy_process_group``, whose binding releases the GIL while the workers are joined.
    del model, optimizer, batches, loader
    acc.free_memory()  # accelerate's own references to them
    gc.collect()  # and any cycle through the wrapper (free_memory collects before it lets go)
    acc.end_training()
    return curves
