"""The engine contract: every registered engine, every task it serves, the same checks.

In the spirit of diffusers' ``PipelineTesterMixin``: the ``(engine, task)`` pairs are read
from the registry when the tests are collected (:func:`contract_cases`), so registering a
new engine is enough for it to be covered. One table says how to build each task's inputs
(:data:`INPUT_BUILDERS`); what the suite must know about an engine (fast options, a bad
option per task, whether the seed matters, what counts its progress steps, previews) is
read from its registration (:class:`~diffcompose.methods.registry.ContractFacts`). An
engine that declares nothing gets its defaults (plus ``model="tiny"`` when it takes a model)
and a generic bad option (an unknown option name).

The contract, per pair:

1. the output has the input's size (odd sizes, extreme aspect ratios);
2. pixels the task promises to keep are bit-identical (paste-back outside the mask plus
   the seam; outside the target box for ``paste``; a ``segment`` mask is False outside its box);
3. the same seed gives the same output (and, for diffusion engines, another seed another one);
4. a cancel from another thread stops the run within one step, raising ``Cancelled``;
   a token cancelled before the run stops it before any work, and one cancelled at the
   start event stops every engine (one-pass ones too) before its work;
5. the first event is the start event (``step=0``, ``total=0``: every engine sends it, the
   runner does), then progress events come in order (1..total) with the right totals and
   usable previews;
6. an out-of-range (or unknown, NaN, mistyped) option is an ``InputError`` before any work.

Then: concurrent requests on one engine, the window rule, the manager's memory budget, the
CLI's "cancelled leaves no output", and a fake engine showing that registration is enough.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import sys
import threading
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

import diffcompose as dc
from diffcompose.inputs import Box
from diffcompose.methods.engine import Engine
from diffcompose.methods.manager import EngineManager
from diffcompose.methods.options import check_range, field_types, flag, option, unwrap_optional
from diffcompose.methods.registry import ContractFacts, EngineInfo, all_engines, get_engine_info, register, unregister
from diffcompose.methods.tasks import TASK_SPECS, prepare
from diffcompose.progress import CancelToken, ProgressEvent
from diffcompose.regions import WindowPolicy, changed_region, default_margin, plan_window

# --------------------------------------------------------------------------- the tables

#: Odd sizes and extreme aspect ratios (width, height); all fast at resolution 64.
SIZES = [(97, 203), (301, 77), (1000, 60)]
#: The size most checks run at.
BASE = SIZES[0]

#: What an engine's ``bad_options`` lacks: an option no engine has.
UNKNOWN_OPTION = {"contract_no_such_option": 1}


@functools.lru_cache(maxsize=None)
def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _photo(w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(_astronaut()).resize((w, h), Image.BICUBIC))


def _ellipse(w: int, h: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """A bool ellipse; centre and radii as shares of the size (radii at least 3 px)."""
    yy, xx = np.mgrid[:h, :w]
    rx, ry = max(3.0, rx * w), max(3.0, ry * h)
    return ((xx - cx * w) / rx) ** 2 + ((yy - cy * h) / ry) ** 2 <= 1.0


def _centre_box(w: int, h: int) -> tuple[int, int, int, int]:
    return (w // 4, h // 4, w - w // 4, h - h // 4)


def _remove_inputs(w: int, h: int) -> dict[str, Any]:
    # Two separate objects (an engine may work on each in its own window).
    mask = _ellipse(w, h, 0.3, 0.5, 0.08, 0.2) | _ellipse(w, h, 0.7, 0.5, 0.08, 0.2)
    return {"image": _photo(w, h), "mask": mask}


def _harmonize_inputs(w: int, h: int) -> dict[str, Any]:
    image = _photo(w, h).copy()
    mask = _ellipse(w, h, 0.5, 0.5, 0.15, 0.2)
    image[mask] = (image[mask] * np.array([0.3, 0.5, 1.0]) + np.array([0, 0, 60])).clip(0, 255).astype(np.uint8)
    return {"image": image, "mask": mask}


def _paste_inputs(w: int, h: int) -> dict[str, Any]:
    yy, xx = np.mgrid[:30, :40]
    obj = np.stack([np.full((30, 40), 240), (xx * 6) % 256, (yy * 8) % 256], -1).astype(np.uint8)
    return {"background": _photo(w, h), "obj": obj, "box": _centre_box(w, h)}


def _segment_inputs(w: int, h: int) -> dict[str, Any]:
    image = _photo(w, h).copy()
    image[_ellipse(w, h, 0.5, 0.5, 0.12, 0.15)] = (250, 30, 200)  # a distinct object inside the box
    return {"image": image, "box": _centre_box(w, h)}


def _compose_inputs(w: int, h: int) -> dict[str, Any]:
    inner, outer = _ellipse(w, h, 0.55, 0.5, 0.1, 0.15), _ellipse(w, h, 0.55, 0.5, 0.13, 0.19)
    edited = (outer & ~inner).astype(np.float32)  # the object's outline, moved right
    return {"image": _photo(w, h), "edited_condition": edited, "mask": _ellipse(w, h, 0.5, 0.5, 0.25, 0.35)}


def _paint_inputs(w: int, h: int) -> dict[str, Any]:
    return {"image": _photo(w, h), "mask": _ellipse(w, h, 0.5, 0.5, 0.2, 0.25),
            "reference": _astronaut()[40:240, 140:340]}


def _inpaint_inputs(w: int, h: int) -> dict[str, Any]:
    return {"image": _photo(w, h), "mask": _ellipse(w, h, 0.5, 0.5, 0.2, 0.25), "prompt": "a red armchair"}


def _insert_inputs(w: int, h: int) -> dict[str, Any]:
    # A box region and a cut-out reference: what every insert engine takes (anydoor requires the mask).
    ref = _astronaut()[40:240, 140:340]
    return {"image": _photo(w, h), "box": _centre_box(w, h), "reference": ref,
            "reference_mask": _ellipse(200, 200, 0.5, 0.5, 0.35, 0.45)}


def _outpaint_inputs(w: int, h: int) -> dict[str, Any]:
    # Grown on two sides by different amounts: the output is larger than the input (the task's job size).
    return {"image": _photo(w, h), "extend": f"{max(8, w // 4)},0,0,{max(8, h // 5)}"}


#: Per task: how to build its inputs at a size (keyword names of ``TASK_SPECS[task].inputs``).
INPUT_BUILDERS: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "remove": _remove_inputs,
    "harmonize": _harmonize_inputs,
    "paste": _paste_inputs,
    "segment": _segment_inputs,
    "compose": _compose_inputs,
    "paint": _paint_inputs,
    "inpaint": _inpaint_inputs,
    "insert": _insert_inputs,
    "outpaint": _outpaint_inputs,
}


def test_tables_cover_every_task() -> None:
    from diffcompose.methods.registry import TASKS

    assert set(INPUT_BUILDERS) == set(TASKS)
    for task, build in INPUT_BUILDERS.items():
        assert set(build(*BASE)) <= set(TASK_SPECS[task].inputs), task


# --------------------------------------------------------------------------- the cases

def contract_cases() -> list[tuple[str, str]]:
    """Every ``(engine, task)`` pair in the registry now: what the contract tests run on."""
    return [(info.name, task) for info in all_engines() for task in info.tasks]


def _params() -> list[Any]:
    params = []
    for name, task in contract_cases():
        missing = get_engine_info(name).missing_packages()
        marks = [pytest.mark.skip(reason=f"{name} needs {', '.join(missing)}")] if missing else []
        params.append(pytest.param(name, task, id=f"{name}-{task}", marks=marks))
    return params


CASES = _params()


def test_registered_engines_are_collected() -> None:
    collected = {(p.values[0], p.values[1]) for p in CASES}
    assert collected == set(contract_cases())
    from diffcompose.methods import ENGINE_PACKAGES

    # every engine package registers at least one engine with at least one task
    modules = {get_engine_info(name).target.split(".")[2] for name, _ in collected}
    assert modules == set(ENGINE_PACKAGES)


# --------------------------------------------------------------------------- helpers

def engine_kwargs(info: EngineInfo) -> dict[str, Any]:
    """Construction arguments: CPU for torch engines, the tiny model for engines that take a model."""
    kw: dict[str, Any] = {}
    if info.needs_torch:
        kw["device"] = "cpu"
    if info.default_model is not None:
        kw["model"] = "tiny"
    return kw


def facts(name: str) -> ContractFacts:
    """What the registration of ``name`` tells the suite (defaults when it declares nothing)."""
    return get_engine_info(name).contract


def fast_options(name: str) -> dict[str, Any]:
    return dict(facts(name).fast_options)


def _get(manager: EngineManager, name: str) -> tuple[Engine, EngineInfo]:
    info = get_engine_info(name)
    missing = info.missing_packages()
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}")
    return manager.get(name, **engine_kwargs(info)), info


def _run(engine: Engine, task: str, inputs: dict[str, Any], **kw: Any) -> Any:
    return engine.run(task, **inputs, **fast_options(engine.name), **kw)


def _arr(image: Any) -> np.ndarray:
    if isinstance(image, list):
        assert len(image) == 1
        image = image[0]
    assert isinstance(image, Image.Image), type(image)
    return np.asarray(image)


def _loop_length(options: Any, steps: str | int | None = None) -> int | None:
    """What a torch engine's progress total must be: the fixed count or the option its facts name,
    else its ``iterations`` or ``steps`` option."""
    if isinstance(steps, int):
        return steps
    for name in (steps,) if steps else ("iterations", "steps"):
        if hasattr(options, name):
            return int(getattr(options, name))
    return None


def _must_report(info: EngineInfo, task: str) -> bool:
    return info.needs_torch or task in info.contract.reports_progress


def _lock_is_free(engine: Engine) -> bool:
    """Whether another thread can take the engine's lock (a cancelled run must release it)."""
    got: list[bool] = []

    def probe() -> None:
        ok = engine.lock.acquire(timeout=5)
        got.append(ok)
        if ok:
            engine.lock.release()

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return got == [True]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Any:
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP's
    spinning threads make each run 5-10x slower: pin torch to one thread for this module."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def manager() -> Any:
    mgr = EngineManager()
    yield mgr
    mgr.unload()


# --------------------------------------------------------------------------- the checks
# Each takes (manager, engine name, task): the parametrised tests and the fake-engine test share them.

def check_output_size(manager: EngineManager, name: str, task: str) -> None:
    engine, _ = _get(manager, name)
    for w, h in SIZES:
        inputs = INPUT_BUILDERS[task](w, h)
        w, h = prepare(task, inputs).size  # the input's size, or the grown canvas's (outpaint)
        out = engine.run(task, **inputs, **fast_options(name), seed=1)
        outs = out if isinstance(out, list) else [out]
        for o in outs:
            assert isinstance(o, Image.Image)
            assert o.size == (w, h), f"{name} {task} at {w}x{h} returned {o.size}"
            a = np.asarray(o)
            if prepare(task, inputs).output == "mask":
                assert a.shape == (h, w)
            else:
                assert a.shape == (h, w, 3) and a.dtype == np.uint8


def check_kept_pixels(manager: EngineManager, name: str, task: str) -> None:
    """What the task promises to keep is kept, bit for bit; and the engine did change something."""
    engine, info = _get(manager, name)
    w, h = BASE
    inputs = INPUT_BUILDERS[task](w, h)
    job = prepare(task, inputs)
    out = _arr(_run(engine, task, inputs, seed=2))
    if job.output == "mask":  # segment: nothing outside the box
        inside = np.zeros((h, w), bool)
        inside[job.region.slices] = True
        mask = out > 127
        assert not mask[~inside].any(), f"{name} {task}: mask outside the box"
        assert mask[inside].any(), f"{name} {task}: found no object"
        return
    image = job.image
    if job.paste_mask is None:  # paste: no promise about the box, none outside it (plus a seam)
        target = np.zeros((h, w), bool)
        target[job.region.slices] = True
        outside = ~changed_region(target, default_margin(image.shape))
        assert np.array_equal(out[outside], image[outside]), f"{name} {task}: pixels outside the box changed"
        assert not np.array_equal(out[target], image[target]), f"{name} {task}: nothing was pasted"
        return
    m = job.paste_mask
    # The engine's paste region (by default the region and its free band: shadows, edges), then the
    # seam (the engine's default, else the project's), then the original.
    keep, seam = engine.paste_region(task, engine.options(task, fast_options(name)), m)
    outside = ~changed_region(keep, default_margin(image.shape) if seam is None else seam)
    assert outside.any() and np.array_equal(out[outside], image[outside]), \
        f"{name} {task}: pixels beyond the band and margin changed"
    assert not np.array_equal(out[m], image[m]), f"{name} {task}: nothing changed inside the mask"
    # An explicit margin of 0: only the mask and the band may change.
    out0 = _arr(_run(engine, task, inputs, seed=2, margin=0))
    assert np.array_equal(out0[~keep], image[~keep]), f"{name} {task}: margin=0 changed pixels beyond the band"
    if info.needs_torch:  # the paste-back is what keeps them: without it the window is redrawn
        raw = _arr(_run(engine, task, inputs, seed=2, paste_back=False))
        assert raw.shape == image.shape and not np.array_equal(raw[outside], image[outside])


def check_seed(manager: EngineManager, name: str, task: str) -> None:
    engine, info = _get(manager, name)
    inputs = INPUT_BUILDERS[task](*BASE)
    a = _arr(_run(engine, task, inputs, seed=7))
    b = _arr(_run(engine, task, inputs, seed=7))
    assert np.array_equal(a, b), f"{name} {task}: same seed, different output"
    if info.needs_torch and info.contract.seeded:
        c = _arr(_run(engine, task, inputs, seed=8))
        assert not np.array_equal(a, c), f"{name} {task}: another seed, same output"


def check_cancel_before_start(manager: EngineManager, name: str, task: str) -> None:
    engine, _ = _get(manager, name)
    inputs = INPUT_BUILDERS[task](*BASE)
    token = CancelToken()
    token.cancel()
    events: list[ProgressEvent] = []
    with pytest.raises(dc.Cancelled) as exc:
        _run(engine, task, inputs, cancel=token, on_progress=events.append)
    assert exc.value.exit_code == 130
    assert events == [], f"{name} {task}: worked after a cancel before the start"
    assert _lock_is_free(engine)


def check_cancel_from_thread(manager: EngineManager, name: str, task: str) -> None:
    engine, info = _get(manager, name)
    inputs = INPUT_BUILDERS[task](*BASE)
    token = CancelToken()
    before: list[ProgressEvent] = []
    after: list[ProgressEvent] = []
    worker = threading.get_ident()
    cancellers: list[int] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.step == 0:  # the start event (check_cancel_at_start cancels there)
            return
        if token.cancelled:
            after.append(event)
            return
        before.append(event)

        def cancel() -> None:
            cancellers.append(threading.get_ident())
            token.cancel()

        t = threading.Thread(target=cancel)
        t.start()
        t.join()

    try:
        _run(engine, task, inputs, cancel=token, on_progress=on_progress)
    except dc.Cancelled:
        cancelled = True
    else:
        cancelled = False
    if not before:
        assert not _must_report(info, task), f"{name} {task} reported no progress"
        assert not cancelled
        pytest.skip(f"{name} {task} reports no progress events (check_cancel_before_start covers it)")
    assert cancellers and cancellers[0] != worker  # the cancel really came from another thread
    assert cancelled, f"{name} {task}: cancelled at step {before[0].step}/{before[0].total} but finished"
    assert len(before) == 1 and len(after) <= 1, (before, after)
    assert _lock_is_free(engine)
    # The engine still serves the next request.
    out = _run(engine, task, inputs)
    assert (out[0] if isinstance(out, list) else out).size == prepare(task, inputs).size


def check_cancel_at_start(manager: EngineManager, name: str, task: str) -> None:
    """A cancel sent while the start event is handled stops the run before the engine's work:
    cheap for every engine, and the proof that a one-pass engine is cancellable too."""
    engine, _ = _get(manager, name)
    inputs = INPUT_BUILDERS[task](*BASE)
    token = CancelToken()
    events: list[ProgressEvent] = []

    def on_progress(event: ProgressEvent) -> None:
        events.append(event)
        token.cancel()

    with pytest.raises(dc.Cancelled):
        _run(engine, task, inputs, cancel=token, on_progress=on_progress)
    assert [(e.task, e.step, e.total) for e in events] == [(task, 0, 0)], f"{name} {task}: {events}"
    assert _lock_is_free(engine)


def check_progress(manager: EngineManager, name: str, task: str) -> None:
    engine, info = _get(manager, name)
    inputs = INPUT_BUILDERS[task](*BASE)
    events: list[ProgressEvent] = []
    previews: list[np.ndarray] = []

    def on_progress(event: ProgressEvent) -> None:
        events.append(event)
        if event.preview is not None and (event.step == 1 or event.step == event.total):
            previews.append(event.preview())

    _run(engine, task, inputs, on_progress=on_progress)
    # Every engine starts with the start event, once: a listener knows the work began.
    assert events and (events[0].task, events[0].step, events[0].total) == (task, 0, 0), \
        f"{name} {task}: no start event first ({events[:1]})"
    assert [e.step for e in events].count(0) == 1, f"{name} {task}: several start events"
    events = events[1:]
    if not events:
        assert not _must_report(info, task), f"{name} {task} reported no progress"
        return
    assert all(isinstance(e, ProgressEvent) for e in events)
    for phase in info.contract.phases:  # loops before the task's own (a per-photo tuning): each ordered, then done
        ahead = [e for e in events if e.task == phase]  # none when the fast options skip it
        assert events[:len(ahead)] == ahead, f"{name} {task}: the {phase} phase does not come first"
        assert [e.step for e in ahead] == list(range(1, len(ahead) + 1)) and {e.total for e in ahead} <= \
            {len(ahead)}, f"{name} {task} {phase}: steps {[e.step for e in ahead]}"
        events = events[len(ahead):]
    assert {e.task for e in events} == {task}
    totals = {e.total for e in events}
    assert len(totals) == 1, f"{name} {task}: totals {totals}"
    total = totals.pop()
    assert [e.step for e in events] == list(range(1, total + 1)), \
        f"{name} {task}: steps {[e.step for e in events]} with total {total}"
    elapsed = [e.elapsed for e in events]
    assert elapsed[0] >= 0 and elapsed == sorted(elapsed)
    if info.needs_torch:
        steps = info.contract.steps
        n = _loop_length(engine.options(task, fast_options(name)), steps)
        assert n is not None, f"{name}: no iterations/steps option; declare ContractFacts(steps=...)"
        assert total in (n, n + 1)  # a PLMS warm-up evaluates its first timestep twice: one event per evaluation
        if not isinstance(steps, int):  # a diffusion loop names its timestep; fixed stages (SAM's two) have none
            assert all(isinstance(e.timestep, int) and not isinstance(e.timestep, bool) for e in events)
        else:
            assert all(e.timestep is None for e in events)
    if info.contract.previews:
        assert all(e.preview is not None for e in events)
        assert len(previews) == min(total, 2)  # the first and the last step's (one event for a one-pass engine)
    for p in previews:
        assert isinstance(p, np.ndarray) and p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3, \
            (p.dtype, p.shape)


def _first_field(options_cls: type, kind: type) -> str | None:
    hints = field_types(options_cls)
    for f in dataclasses.fields(options_cls):
        inner, _ = unwrap_optional(hints[f.name])
        if inner is kind:
            return f.name
    return None


def check_bad_option(manager: EngineManager, name: str, task: str) -> None:
    engine, info = _get(manager, name)
    inputs = INPUT_BUILDERS[task](*BASE)
    events: list[ProgressEvent] = []
    bad = info.contract.bad_options.get(task, UNKNOWN_OPTION)
    attempts = [bad, UNKNOWN_OPTION]
    cls = info.tasks[task]
    if (f := _first_field(cls, float)) is not None:
        attempts.append({f: math.nan})
    if (i := _first_field(cls, int)) is not None:
        attempts.append({i: "many"})
    for values in attempts:
        opts = {**fast_options(name), **values}
        with pytest.raises(dc.InputError) as exc:
            engine.run(task, **inputs, **opts, on_progress=events.append)
        message = str(exc.value)
        assert "\n" not in message and flag(next(iter(values))) in message, message
    assert events == [], f"{name} {task}: worked with a bad option"


CONTRACT_CHECKS = [check_output_size, check_kept_pixels, check_seed, check_cancel_before_start,
                   check_cancel_from_thread, check_cancel_at_start, check_progress, check_bad_option]


# --------------------------------------------------------------------------- the contract tests

@pytest.mark.slow
@pytest.mark.parametrize(("name", "task"), CASES)
def test_output_size(manager, name, task) -> None:
    check_output_size(manager, name, task)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_kept_pixels(manager, name, task) -> None:
    check_kept_pixels(manager, name, task)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_seed(manager, name, task) -> None:
    check_seed(manager, name, task)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_cancel_before_start(manager, name, task) -> None:
    check_cancel_before_start(manager, name, task)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_cancel_from_another_thread(manager, name, task) -> None:
    check_cancel_from_thread(manager, name, task)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_cancel_at_the_start_event(manager, name, task) -> None:
    check_cancel_at_start(manager, name, task)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_progress_events(manager, name, task) -> None:
    check_progress(manager, name, task)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_bad_option(manager, name, task) -> None:
    check_bad_option(manager, name, task)


# --------------------------------------------------------------------------- diffusion specifics

def _diffusion(name: str) -> EngineInfo:
    info = get_engine_info(name)
    if info.missing_packages():
        pytest.skip(f"{name} needs {', '.join(info.missing_packages())}")
    return info


@pytest.mark.parametrize("scheduler", ["plms", "ddim", "euler", "dpm"])
def test_pbe_progress_total_per_scheduler(manager, scheduler) -> None:
    """The total is the number of model evaluations: steps, plus one for PLMS (PNDM repeats its first timestep)."""
    _diffusion("pbe")
    engine = manager.get("pbe", **engine_kwargs(get_engine_info("pbe")))
    events: list[ProgressEvent] = []
    engine.run("paint", **_paint_inputs(*BASE), steps=3, resolution=64, scheduler=scheduler,
               on_progress=events.append)
    n = 4 if scheduler == "plms" else 3
    assert [(e.step, e.total) for e in events] == [(0, 0)] + [(i, n) for i in range(1, n + 1)]


def test_concurrent_requests_match_sequential(manager) -> None:
    """Two threads on one loaded engine get exactly what they get one after the other, never interleaved."""
    info = _diffusion("freecompose")
    engine = manager.get("freecompose", **engine_kwargs(info))
    jobs = {
        "remove": dict(**_remove_inputs(*BASE), iterations=3, resolution=64, seed=11),
        "compose": dict(**_compose_inputs(*BASE), iterations=3, resolution=64, seed=12),
    }
    sequential = {task: _arr(engine.run(task, **kw)) for task, kw in jobs.items()}

    barrier = threading.Barrier(2)
    results: dict[str, np.ndarray] = {}
    errors: list[BaseException] = []
    trace: list[str] = []

    def work(task: str) -> None:
        try:
            barrier.wait(timeout=30)
            results[task] = _arr(engine.run(task, **jobs[task], on_progress=lambda e: trace.append(e.task)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(task,)) for task in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert set(results) == set(jobs)
    for task in jobs:
        assert np.array_equal(results[task], sequential[task]), f"{task} differs when run concurrently"
    # One request at a time on the engine: each request's events (its start event, then its 3 steps) form one block.
    blocks = [t for i, t in enumerate(trace) if i == 0 or trace[i - 1] != t]
    assert sorted(blocks) == ["compose", "remove"] and len(trace) == 2 * (1 + 3), trace


# --------------------------------------------------------------------------- the window rule

def test_window_around_small_region_in_large_image() -> None:
    policy = WindowPolicy(size=512, multiple=64)
    for region in (Box(980, 730, 1020, 770), Box(0, 0, 40, 40), Box(1960, 1460, 2000, 1500)):
        win = policy.plan(image_size=(2000, 1500), region=region)
        box = win.box
        assert box.width >= 512 and box.height >= 512, win
        assert 0 <= box.x0 <= region.x0 and region.x1 <= box.x1 <= 2000, win
        assert 0 <= box.y0 <= region.y0 and region.y1 <= box.y1 <= 1500, win
        assert win.content[0] <= box.width and win.content[1] <= box.height, win  # never upsampled
        assert win.work_size[0] % 64 == 0 and win.work_size[1] % 64 == 0, win
        assert win.work_size[0] * win.work_size[1] <= 512 * 512
        assert box.width * box.height < 2000 * 1500 / 4  # a window, not the photo
    assert plan_window((2000, 1500), Box(980, 730, 1020, 770), resolution=512, multiple=64) == \
        policy.plan((2000, 1500), Box(980, 730, 1020, 770))


def test_small_image_is_worked_whole() -> None:
    policy = WindowPolicy(size=512, multiple=64)
    win = policy.plan(image_size=(300, 200), region=Box(100, 80, 140, 120))
    assert win.box == Box(0, 0, 300, 200)
    assert win.content == (300, 200)  # at its own pixels: neither shrunk to the multiple nor stretched
    assert win.work_size == (320, 256)  # mirrored past the bottom and right edges up to the multiple


def test_freecompose_works_at_a_window_around_the_object(manager) -> None:
    info = _diffusion("freecompose")
    engine = manager.get("freecompose", **engine_kwargs(info))
    w, h = 2000, 1500
    image = _photo(w, h)
    mask = np.zeros((h, w), bool)
    mask[300:340, 1400:1440] = True  # a 40-px object
    shapes: list[tuple[int, ...]] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.step == 1:
            shapes.append(event.preview().shape)

    out = np.asarray(engine.remove(image, mask, iterations=2, resolution=64, paste_back=False, seed=3,
                                   on_progress=on_progress))
    assert out.shape == image.shape
    changed = np.any(out != image, axis=2)
    ys, xs = np.nonzero(changed)
    assert len(ys) > 0
    # Only a window around the object changed (the object plus context, grown to 64 source px).
    assert ys.min() <= 300 and ys.max() >= 339 and xs.min() <= 1400 and xs.max() >= 1439
    assert ys.min() >= 300 - 100 and ys.max() < 340 + 100 and xs.min() >= 1400 - 100 and xs.max() < 1440 + 100, \
        (ys.min(), ys.max(), xs.min(), xs.max())
    win = engine.window_policy("remove", engine.options("remove", {"iterations": 2, "resolution": 64})).plan(
        (w, h), Box(1400, 300, 1440, 340))
    outside = np.ones((h, w), bool)
    outside[win.box.slices] = False
    assert not changed[outside].any()
    # ... worked at about 64 x 64, not at the photo's scale.
    assert shapes == [(win.content[1], win.content[0], 3)]  # previews show the window, not its mirrored margin
    assert win.work_size[0] * win.work_size[1] <= 64 * 64 * 2


# --------------------------------------------------------------------------- the manager

@pytest.mark.slow
def test_manager_budget_evicts_least_recently_used() -> None:
    _diffusion("freecompose")
    _diffusion("pbe")
    mgr = EngineManager(memory_budget=1)
    try:
        fc = mgr.get("freecompose", model="tiny", device="cpu")
        assert fc.loaded and fc.memory_bytes() > 1
        pbe = mgr.get("pbe", model="tiny", device="cpu")
        assert pbe.loaded and not fc.loaded, "the least recently used engine was not unloaded"
        assert fc.memory_bytes() == 0
        assert mgr.loaded() == [pbe]
        fc2 = mgr.get("freecompose", model="tiny", device="cpu")  # reloaded on demand
        assert fc2.loaded and not pbe.loaded and mgr.loaded() == [fc2]
        inputs = _remove_inputs(*BASE)
        out = fc2.remove(inputs["image"], inputs["mask"], iterations=1, resolution=64)
        assert out.size == BASE
    finally:
        mgr.unload()


@pytest.mark.slow
def test_manager_evicts_in_lru_order_and_keeps_what_fits() -> None:
    _diffusion("freecompose")
    _diffusion("pbe")
    probe = EngineManager()
    a = probe.get("freecompose", model="tiny", device="cpu")
    b = probe.get("pbe", model="tiny", device="cpu")
    assert probe.loaded() == [a, b]  # no budget: both stay
    # Room for freecompose + pbe and for two freecompose copies, never for all three.
    budget = a.memory_bytes() + max(a.memory_bytes(), b.memory_bytes())
    probe.unload()

    mgr = EngineManager(memory_budget=budget)
    try:
        a = mgr.get("freecompose", model="tiny", device="cpu")
        b = mgr.get("pbe", model="tiny", device="cpu")
        assert a.loaded and b.loaded  # both fit
        assert mgr.get("freecompose", model="tiny", device="cpu") is a  # shared, and now the most recent
        c = mgr.get("freecompose", model="tiny", device="cpu", dtype="float32")  # another key: over budget
        assert c is not a and c.loaded
        assert not b.loaded and a.loaded, "evicted the wrong engine (pbe was the least recently used)"
        assert mgr.memory_bytes() <= budget
    finally:
        mgr.unload()


# --------------------------------------------------------------------------- the CLI

@pytest.mark.parametrize("interrupt", [dc.Cancelled, KeyboardInterrupt])
def test_cli_cancel_leaves_no_output(tmp_path: Path, monkeypatch, capsys, interrupt) -> None:
    _diffusion("freecompose")
    from diffcompose.cli.main import main
    from diffcompose.progress import Progress

    image = _photo(97, 133)
    Image.fromarray(image).save(tmp_path / "img.png")
    mask = np.zeros((133, 97), np.uint8)
    mask[40:80, 30:60] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")

    def args(out: Path) -> list[str]:
        return ["remove", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png"), "-o", str(out),
                "--engine", "freecompose", "--model", "tiny", "--device", "cpu", "--iterations", "3",
                "--resolution", "64"]

    control = tmp_path / "control.png"
    assert main(args(control)) == 0 and control.exists()  # the same command, not cancelled, writes

    calls: list[int] = []
    original = Progress.step

    def step(self, *a: Any, **kw: Any) -> None:
        calls.append(self.done)
        if len(calls) == 2:
            raise interrupt("cancelled" if interrupt is dc.Cancelled else "")
        original(self, *a, **kw)

    monkeypatch.setattr(Progress, "step", step)
    out = tmp_path / "out.png"
    capsys.readouterr()
    assert main(args(out)) == 130
    assert len(calls) == 2  # cancelled mid-run, at the second of three steps
    assert not out.exists()
    assert "cancelled" in capsys.readouterr().err


# --------------------------------------------------------------------------- a new engine

FAKE_MODULE = "diffcompose_contract_fakes"
FAKE, BROKEN = "contract-fake", "contract-fake-broken"


@dataclass(frozen=True)
class FakeRemoveOptions:
    iterations: int = option(3, "fake steps")
    strength: float = option(1.0, "unused")

    def __post_init__(self) -> None:
        check_range("iterations", self.iterations, 1, 100)
        check_range("strength", self.strength, 0.0, 1.0)


class FakeEngine(Engine):
    """A minimal engine: redraws its whole (resized) window with seeded noise, step by step."""

    name = FAKE

    def window_policy(self, task: str, options: Any) -> WindowPolicy:
        return WindowPolicy(size=64, multiple=8, context=0.5)

    def _noise(self, ctx: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.random.default_rng(ctx.seed).integers(0, 256, shape, dtype=np.uint8)

    def _total(self, options: FakeRemoveOptions) -> int:
        return options.iterations

    def _remove(self, *, image: np.ndarray, mask: np.ndarray, options: FakeRemoveOptions, ctx: Any) -> np.ndarray:
        progress = ctx.progress("remove", self._total(options))
        out = image
        for i in range(options.iterations):
            out = self._noise(ctx, image.shape)
            progress.step(timestep=999 - i, preview=lambda o=out: o)
        return out


class BrokenFakeEngine(FakeEngine):
    """Breaks the contract: announces one step too many and ignores the seed."""

    name = BROKEN

    def _noise(self, ctx: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.random.default_rng().integers(0, 256, shape, dtype=np.uint8)

    def _total(self, options: FakeRemoveOptions) -> int:
        return options.iterations + 1


@contextmanager
def _registered(monkeypatch: pytest.MonkeyPatch, name: str, cls: type) -> Any:
    module = sys.modules.get(FAKE_MODULE) or types.ModuleType(FAKE_MODULE)
    setattr(module, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, FAKE_MODULE, module)
    info = register(EngineInfo(name, f"{FAKE_MODULE}:{cls.__name__}", tasks={"remove": FakeRemoveOptions},
                               summary="contract test double"))
    try:
        yield info
    finally:
        unregister(name)


@pytest.fixture
def fake_engine(monkeypatch):
    with _registered(monkeypatch, FAKE, FakeEngine) as info:
        yield info


def test_registering_an_engine_puts_it_under_the_contract(fake_engine) -> None:
    assert (FAKE, "remove") in contract_cases()
    assert fake_engine.contract == ContractFacts()  # declares no facts: covered by the fallbacks
    assert engine_kwargs(fake_engine) == {}
    mgr = EngineManager()
    engine = mgr.get(FAKE)
    assert isinstance(engine, FakeEngine) and engine.loaded
    for check in CONTRACT_CHECKS:
        check(mgr, FAKE, "remove")
    # It changes its whole window: the paste-back of Engine.run is what kept the outside.
    inputs = _remove_inputs(*BASE)
    raw = np.asarray(engine.run("remove", **inputs, paste_back=False))
    kept = np.asarray(engine.run("remove", **inputs))
    outside = ~changed_region(inputs["mask"], default_margin(inputs["image"].shape))
    assert not np.array_equal(raw[outside], inputs["image"][outside])
    assert np.array_equal(kept[outside], inputs["image"][outside])


def test_unregistered_engine_leaves_the_contract(monkeypatch) -> None:
    with _registered(monkeypatch, FAKE, FakeEngine):
        assert (FAKE, "remove") in contract_cases()
    assert FAKE not in {name for name, _ in contract_cases()}
    with pytest.raises(dc.InputError):
        get_engine_info(FAKE)


def test_contract_catches_a_broken_engine(monkeypatch) -> None:
    with _registered(monkeypatch, BROKEN, BrokenFakeEngine):
        mgr = EngineManager()
        check_output_size(mgr, BROKEN, "remove")  # what it does not break passes
        with pytest.raises(AssertionError, match="steps"):
            check_progress(mgr, BROKEN, "remove")
        with pytest.raises(AssertionError, match="same seed"):
            check_seed(mgr, BROKEN, "remove")


def test_fallbacks_for_an_engine_with_a_model() -> None:
    info = EngineInfo("x", "nowhere:X", tasks={"remove": FakeRemoveOptions}, requires=("torch",),
                      default_model="org/model")
    assert engine_kwargs(info) == {"device": "cpu", "model": "tiny"}
    assert info.contract == ContractFacts() and info.contract.fast_options == {} and info.contract.bad_options == {}
