"""Which engines exist, which tasks each serves with which options, and which one ``auto`` picks.

An engine registers one :class:`EngineInfo`: the dotted path of its class (imported on
first use, so ``--help`` and the engines that need no torch never import it), its options
dataclass per task, its ``auto`` priority, and the packages it needs (with the extra that
installs them, for a one-line error on a base install). The same registration declares
everything else the engine offers, so that adding an engine touches its own package only:
the builder of its tiny random model (``--model tiny``), its checkpoint converter
(``diffcompose convert ENGINE``), its trainer (``diffcompose train ENGINE``) and the facts
the contract suite needs to test it (:class:`ContractFacts`). Functions are named as
``"module:function"`` strings, imported when used: the registration stays light.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Iterable

from diffcompose.errors import InputError, MissingExtraError
from diffcompose.methods.tasks import TASK_SPECS

#: The built-in tasks (an engine implements a subset); :func:`~.tasks.register_task` may add more.
TASKS = tuple(TASK_SPECS)

#: ``default_model`` of an engine that takes a model but has none published (``--model`` is required).
NO_DEFAULT_MODEL = "none"

#: Packages of the ``diffusion`` extra, as importable names.
DIFFUSION = ("torch", "diffusers", "transformers", "safetensors")


def split_target(target: str) -> tuple[str, str]:
    """``(module, name)`` of a ``"package.module:name"`` string."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"expected 'module:name', got {target!r}")
    return module, name


def load_target(target: str) -> Any:
    """The object a ``"package.module:name"`` string names (imports its module)."""
    module, name = split_target(target)
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Converter:
    """``diffcompose convert ENGINE CKPT OUT_DIR [--like DIR] [--force]``.

    ``target``: ``"module:function"``, called as ``function(checkpoint, out_dir, *, like, force)``
    and returning the folder it wrote; imported only once the arguments have been checked
    (the conversion needs torch, the checks do not).
    """

    target: str
    help: str
    description: str
    like_help: str


@dataclass(frozen=True)
class Trainer:
    """``diffcompose train ENGINE --config FILE [--max-steps N] [--output-dir DIR] [--resume R]``.

    ``config``: ``"module:function"`` reading the YAML config into its checked dataclass (a
    light module: the config is refused before torch is imported). ``train``:
    ``"module:function"`` called as ``train(cfg, on_progress=...)``, returning the loss history
    (a list of losses, or a dataclass of such lists whose first is the total). ``export``:
    ``"module:function"`` called as ``export(cfg, checkpoint, out_dir, force=)``; when given, the
    command also takes ``--export CHECKPOINT OUT_DIR`` and ``--force``.
    """

    config: str
    train: str
    example: str  # the example config, named in the help ("src/diffcompose/methods/ENGINE/train.example.yaml")
    help: str
    description: str
    export: str | None = None
    #: ``(config key, help)`` pairs: more keys the command line may set (``--few-shot DIR`` sets
    #: ``few_shot``), applied like the run-folder overrides before the config is checked again.
    flags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ContractFacts:
    """What the engine contract suite must know about an engine; the defaults fit one without torch.

    ``fast_options``: options that make it fast on a CPU (few steps, small resolution).
    ``bad_options``: per task, one out-of-range option value (default: an unknown option name).
    ``seeded``: another seed changes the output (checked for torch engines only).
    ``steps``: the option that counts the progress steps (``"steps"``, ``"iterations"``), or
    their fixed number; ``None``: ``iterations`` or ``steps`` when the options have one.
    ``previews``: every progress event carries a preview.
    ``reports_progress``: tasks that must report progress although the engine needs no torch
    (every torch engine must).
    ``phases``: names of loops that run, each with its own ordered steps, before the task's own
    (Uni-paint's per-photo fine-tuning, ``tune``); the task's loop comes last.
    """

    fast_options: dict[str, Any] = field(default_factory=dict)
    bad_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeded: bool = True
    steps: str | int | None = None
    previews: bool = False
    reports_progress: tuple[str, ...] = ()
    phases: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineInfo:
    """An engine as the registry knows it, before its class is imported.

    ``priority``: ``auto`` tries engines from the highest. ``wants_accelerator``: ``auto``
    passes over it when no CUDA/MPS device is present (unless no other engine serves the
    task). ``default_model``: what ``--model`` means when not given (``None``: the engine
    takes no model; :data:`NO_DEFAULT_MODEL`: it takes one, but none is published).
    ``tiny``: ``"module:function"`` returning the folder of a tiny random model, what
    ``--model tiny`` loads. ``model_classes``: the class names a model folder of this engine
    declares (``_class_name`` in its ``model_index.json``, or ``architectures`` in its
    ``config.json``), by which the server's model picker finds its models already in the
    local Hugging Face cache or in ``--model-dir``; a folder written for one engine (its
    ``model_index.json`` names it: :data:`~diffcompose.models.hub.ENGINE_KEY`) is offered to
    that engine only, whatever its class.
    ``predicts_mask``: its ``inpaint`` also predicts the object's mask (``--mask-output``).
    ``demo``: ``"module:function"`` returning the engine's :class:`diffcompose.demo.Step` list
    for a testdata folder (what ``diffcompose demo`` runs: declare one only for an engine that
    needs no weights). ``takes``: task -> the opt-in inputs of that task
    (:attr:`~.tasks.InputSpec.opt_in`, e.g. a sketch) the engine uses; it refuses the others.
    ``converter``, ``trainer`` and ``contract``: see their classes.
    """

    name: str
    target: str  # "package.module:Class"
    tasks: dict[str, type] = field(default_factory=dict)
    priority: int = 0
    wants_accelerator: bool = False
    requires: tuple[str, ...] = ()
    extra: str | None = None
    default_model: str | None = None
    summary: str = ""
    tiny: str | None = None
    model_classes: tuple[str, ...] = ()
    predicts_mask: bool = False
    demo: str | None = None
    takes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    converter: Converter | None = None
    trainer: Trainer | None = None
    contract: ContractFacts = field(default_factory=ContractFacts)
    weights_available: str | None = None

    def __post_init__(self) -> None:
        for task, options in self.tasks.items():
            if task not in TASK_SPECS:
                raise ValueError(f"unknown task {task!r}")
            if not dataclasses.is_dataclass(options):
                raise TypeError(f"options of {self.name} {task} must be a dataclass")
        for task, inputs in self.takes.items():
            if task not in self.tasks:
                raise ValueError(f"{self.name} takes inputs of {task!r}, a task it does not serve")
            unknown = set(inputs) - set(TASK_SPECS[task].opt_in)
            if unknown:
                raise ValueError(f"{self.name}: {sorted(unknown)} are not opt-in inputs of {task}")
        # A misspelt target fails at registration, not when a user first runs the command.
        targets = [self.target, self.tiny, self.demo, self.weights_available]
        if self.converter is not None:
            targets.append(self.converter.target)
        if self.trainer is not None:
            targets += [self.trainer.config, self.trainer.train, self.trainer.export]
        for target in filter(None, targets):
            split_target(target)

    @property
    def needs_torch(self) -> bool:
        return "torch" in self.requires

    def missing_packages(self) -> list[str]:
        return [p for p in self.requires if importlib.util.find_spec(p) is None]

    def check_installed(self) -> None:
        missing = self.missing_packages()
        if missing:
            how = f"pip install 'diffcompose[{self.extra}]'" if self.extra else f"pip install {' '.join(missing)}"
            raise MissingExtraError(f"engine '{self.name}' needs {', '.join(missing)}, which is not installed; "
                                    f"install it with: {how}")

    def load_class(self) -> type:
        """The engine class (imports its module: torch for diffusion engines)."""
        self.check_installed()
        return load_target(self.target)


_ENGINES: dict[str, EngineInfo] = {}


def register(info: EngineInfo) -> EngineInfo:
    """Add (or replace) an engine; returns it."""
    _ENGINES[info.name] = info
    return info


def unregister(name: str) -> None:
    _ENGINES.pop(name, None)


def all_engines() -> list[EngineInfo]:
    return list(_ENGINES.values())


def get_engine_info(name: str) -> EngineInfo:
    try:
        return _ENGINES[name]
    except KeyError:
        raise InputError(f"unknown engine '{name}'; engines: {', '.join(_ENGINES)}") from None


def with_converter() -> list[EngineInfo]:
    """Engines that declare a checkpoint converter (``diffcompose convert``), in registration order."""
    return [info for info in _ENGINES.values() if info.converter is not None]


def with_trainer() -> list[EngineInfo]:
    """Engines that declare a trainer (``diffcompose train``), in registration order."""
    return [info for info in _ENGINES.values() if info.trainer is not None]


def engines_for(task: str) -> list[str]:
    """Engines serving ``task``, in registration order (what ``--help`` lists)."""
    return [name for name, info in _ENGINES.items() if task in info.tasks]


def options_for(engine: str, task: str) -> type:
    info = get_engine_info(engine)
    if task not in info.tasks:
        raise InputError(f"engine '{engine}' cannot {task}; engines for {task}: {', '.join(engines_for(task))}")
    return info.tasks[task]


def check_takes(engine: str, task: str, given: Iterable[str]) -> None:
    """One line when ``engine`` does not take one of the opt-in inputs ``given`` for ``task``
    (it would ignore what the user drew), naming the engines that do."""
    takes = get_engine_info(engine).takes.get(task, ())
    refused = [k for k in given if k not in takes]
    if refused:
        others = [e for e in engines_for(task) if refused[0] in _ENGINES[e].takes.get(task, ())]
        raise InputError(f"engine '{engine}' takes no {refused[0].replace('_', ' ')} for {task}; "
                         f"engines that do: {', '.join(others) or 'none'}")


def resolve_engine(name: str, task: str, given: Iterable[str] = ()) -> tuple[str, str]:
    """``(engine, why)``: ``name`` itself, or for ``auto`` the first engine by priority that suits this machine.

    ``given``: the opt-in inputs of the request; ``auto`` chooses among the engines that take them all.
    """
    given = tuple(given)
    available = engines_for(task)
    if not available:
        raise InputError(f"no engine implements '{task}'")
    if name != "auto":
        options_for(name, task)
        check_takes(name, task, given)
        return name, "chosen with --engine"
    if given:
        available = [e for e in available if set(given) <= set(_ENGINES[e].takes.get(task, ()))]
        if not available:
            raise InputError(f"no engine for {task} takes {' and '.join(g.replace('_', ' ') for g in given)}")
    if len(available) == 1:
        taking = f" taking {' and '.join(g.replace('_', ' ') for g in given)}" if given else ""
        return available[0], f"the only engine for {task}{taking}"
    ranked = sorted((_ENGINES[e] for e in available), key=lambda i: -i.priority)  # stable: ties keep order
    from diffcompose.models.device import accelerator_available

    skipped = []
    for info in ranked:
        missing = info.missing_packages()
        if missing:
            skipped.append(f"{info.name} needs {', '.join(missing)}")
            continue
        no_weights = load_target(info.weights_available)() if info.weights_available else None
        if no_weights:
            skipped.append(f"{info.name}: {no_weights} (--engine {info.name} downloads them)")
            continue
        accel = accelerator_available() if info.wants_accelerator else None
        if info.wants_accelerator:
            if not accel:
                skipped.append(f"{info.name} wants a CUDA or MPS device and none is present "
                               f"(--engine {info.name} forces it)")
                continue
        lead = "highest priority" if not skipped else "next by priority"
        device = f" and a {accel.upper()} device is present" if accel else ""
        return info.name, f"{lead} for {task} ({info.priority}){device}" + (f"; {'; '.join(skipped)}" if skipped else "")
    raise InputError(f"no engine for {task} can run here: {'; '.join(skipped)}")
