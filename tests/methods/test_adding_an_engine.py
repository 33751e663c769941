"""Adding an engine is one package: proof by a throw-away one.

The test writes a small engine package to a temporary folder, as a contributor would write
one under ``methods/``: a one-pass, deterministic fill for ``remove`` (LaMa-shaped: no steps
option, the seed changes nothing, torch required), with a tiny-model builder, a checkpoint
converter and a trainer running on the shared training loop. Importing its ``options``
module registers it (for an engine of this project: its entry in ``ENGINE_PACKAGES``);
nothing else is edited. Then, with no other file touched, it is in every place an engine
must be: ``diffcompose --help`` (the ``train`` line), the task command's help, ``convert
--help``, ``train --help``, ``GET /api/engines``, the OpenAPI document, a batch run; its
converter and trainer work from the command line and what they write loads with
``--model``; and it passes every check of the engine contract suite, because its
registration states the facts the suite needs (and fails two of them without those facts).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("safetensors")

from diffcompose.cli.main import main  # noqa: E402
from diffcompose.methods.manager import EngineManager  # noqa: E402
from diffcompose.methods.registry import ContractFacts, get_engine_info, register, unregister  # noqa: E402
from conftest import REPO  # noqa: E402
from test_engine_contract import CONTRACT_CHECKS, check_progress, check_seed, engine_kwargs  # noqa: E402

PACKAGE = "throwaway_fill"
ENGINE = "throwaway-fill"

#: The package, file by file: what adding an engine takes.
SOURCES = {
    "__init__.py": '''
        """A throw-away fill engine (tests/methods/test_adding_an_engine.py)."""
    ''',
    "options.py": '''
        """Its options and its registration: light (no torch), imported to register the engine."""

        from dataclasses import dataclass
        from pathlib import Path

        from diffcompose.methods.options import check_range, option
        from diffcompose.methods.registry import (
            NO_DEFAULT_MODEL, ContractFacts, Converter, EngineInfo, Trainer, register,
        )

        ENGINE = "throwaway-fill"


        @dataclass(frozen=True)
        class FillOptions:
            resolution: int = option(64, "working size in pixels")
            context: float = option(0.5, "context around the mask in the window, as a share of its size")

            def __post_init__(self) -> None:
                check_range("resolution", self.resolution, 16, 1024)
                check_range("context", self.context, 0.0, 10.0)


        register(EngineInfo(
            ENGINE, "throwaway_fill.engine:FillEngine", tasks={"remove": FillOptions},
            priority=-100, requires=("torch", "safetensors"), default_model=NO_DEFAULT_MODEL,
            summary="throw-away one-pass fill",
            tiny="throwaway_fill.net:ensure_tiny",
            converter=Converter("throwaway_fill.convert:convert", help="throw-away fill (generator.*)",
                                description="Convert a throw-away fill checkpoint into OUT_DIR.",
                                like_help="take config.json from this model directory"),
            trainer=Trainer(config="throwaway_fill.config:load_config", train="throwaway_fill.train:train",
                            example=str(Path(__file__).parent / "train.example.yaml"), help="throw-away fill, hole filling",
                            description="Train the throw-away fill on images with random holes."),
            contract=ContractFacts(fast_options={"resolution": 32}, bad_options={"remove": {"resolution": 8}},
                                   seeded=False, steps=1, previews=True),
        ))
    ''',
    "net.py": '''
        """The network: two convolutions over the masked image and its mask (a stand-in for LaMa)."""

        import json
        from pathlib import Path

        import numpy as np
        import torch
        from torch import nn

        from diffcompose.models.hub import read_json, read_safetensors, resolve_model

        CONFIG, WEIGHTS = "config.json", "model.safetensors"


        class FillNet(nn.Module):
            def __init__(self, hidden: int = 8) -> None:
                super().__init__()
                self.hidden = hidden
                self.inp = nn.Conv2d(4, hidden, 3, padding=1)
                self.out = nn.Conv2d(hidden, 3, 3, padding=1)

            def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                return torch.tanh(x + self.out(torch.relu(self.inp(torch.cat([x, mask], 1)))))

            @classmethod
            def from_dir(cls, root: Path) -> "FillNet":
                net = cls(int(read_json(Path(root) / CONFIG, "fill model config")["hidden"]))
                net.load_state_dict(read_safetensors(Path(root) / WEIGHTS, "fill model weights"))
                return net

            def save(self, folder: Path) -> Path:
                from safetensors.torch import save_file

                (Path(folder) / CONFIG).write_text(json.dumps({"hidden": self.hidden}))
                save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                          str(Path(folder) / WEIGHTS))
                return Path(folder)


        def locate(name: str) -> Path:
            return resolve_model(name, [CONFIG, WEIGHTS], what="throw-away fill model",
                                 hint="; pass --model DIR (from 'diffcompose convert throwaway-fill')")


        def ensure_tiny() -> Path:
            folder = Path(__file__).parent / "tiny-model"
            if not (folder / WEIGHTS).is_file():
                folder.mkdir(exist_ok=True)
                with torch.random.fork_rng():
                    torch.manual_seed(0)
                    FillNet().save(folder)
            return folder


        def to_input(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
            m = torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()
            return x * (1 - m), m


        def to_image(y: torch.Tensor) -> np.ndarray:
            return ((y[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    ''',
    "engine.py": '''
        """The engine: one pass of the network over the window, one progress step."""

        import torch

        from diffcompose.methods.diffusion import DiffusionEngine
        from diffcompose.regions import WindowPolicy
        from throwaway_fill.net import FillNet, locate, to_image, to_input

        NO_WEIGHTS = "no throw-away fill weights are published: pass --model DIR, or --model tiny"


        class FillEngine(DiffusionEngine):
            name = "throwaway-fill"

            def _load(self) -> None:
                self._resolve_device()
                root = self.model_dir(locate, missing=NO_WEIGHTS)
                self.net = FillNet.from_dir(root).to(self.device, self.dtype).eval().requires_grad_(False)

            def modules(self) -> list:
                return [self.net]

            def window_policy(self, task, options) -> WindowPolicy:
                return WindowPolicy(options.resolution, 8, context=options.context)

            @torch.no_grad()
            def _remove(self, *, image, mask, options, ctx):
                progress = ctx.progress("remove", 1)
                x, m = to_input(image, mask)
                out = to_image(self.net(x.to(self.device, self.dtype), m.to(self.device, self.dtype)).float().cpu())
                progress.step(preview=lambda: out)
                return out
    ''',
    "convert.py": '''
        """The converter: a published checkpoint (its ``generator.*`` weights) -> a model folder."""

        from pathlib import Path

        from diffcompose.errors import InputError
        from diffcompose.models.hub import read_json, read_safetensors
        from diffcompose.outdir import building
        from throwaway_fill.net import CONFIG, FillNet


        def convert(checkpoint: Path, out_dir: Path, *, like: Path | None = None, force: bool = False) -> Path:
            state = read_safetensors(checkpoint, "checkpoint")
            weights = {k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")}
            if not weights:
                raise InputError(f"{checkpoint} holds no generator.* weights: not a throw-away fill checkpoint")
            hidden = read_json(like / CONFIG)["hidden"] if like else weights["inp.weight"].shape[0]
            net = FillNet(int(hidden))
            try:
                net.load_state_dict(weights)
            except RuntimeError as exc:
                raise InputError(f"{checkpoint} does not fit: {str(exc).splitlines()[0]}") from None
            with building(out_dir, "convert throwaway-fill") as tmp:
                net.save(tmp)
            return out_dir
    ''',
    "config.py": '''
        """The trainer's config (light: read and checked before torch is imported)."""

        from dataclasses import dataclass
        from pathlib import Path

        from diffcompose.training import config as shared


        @dataclass
        class FillTrainConfig:
            manifest: str = ""
            image_root: str | None = None
            resolution: int = 64
            min_area: float = 0.05
            max_area: float = 0.3
            num_workers: int = 0
            init: str = "tiny"
            output_dir: str = "runs/fill"
            max_steps: int = 100
            batch_size: int = 2
            learning_rate: float = 1e-3
            weight_decay: float = 0.0
            warmup_steps: int = 0
            gradient_accumulation_steps: int = 1
            max_grad_norm: float = 0.0
            mixed_precision: str = "no"
            ema_decay: float | None = None
            checkpoint_every: int = 1000
            seed: int = 0
            log_every: int = 10
            resume: str | None = None

            def __post_init__(self) -> None:
                shared.check_training_keys(self)


        def load_config(path: Path) -> FillTrainConfig:
            return shared.load_config(path, FillTrainConfig)
    ''',
    "train.example.yaml": '''
        # The throw-away fill's training config: the package ships it beside its trainer.
        data:
          manifest: data/train.jsonl
          resolution: 64
        train:
          output_dir: runs/fill
          max_steps: 50
          batch_size: 2
    ''',
    "train.py": '''
        """The trainer: random rectangular holes in the manifest's images, L1 inside the hole, on the shared loop."""

        from pathlib import Path

        import numpy as np
        import torch
        from PIL import Image

        from diffcompose.models.hub import resolve_name
        from diffcompose.outdir import building
        from diffcompose.training.loop import Recipe, export_copy, fit, start_run, warmup_factor
        from diffcompose.training.manifest import json_objects
        from throwaway_fill.net import FillNet, ensure_tiny, locate


        class Holes(torch.utils.data.Dataset):
            def __init__(self, paths: list, cfg) -> None:
                self.paths, self.cfg = paths, cfg

            def __len__(self) -> int:
                return len(self.paths)

            def __getitem__(self, i: int) -> dict:
                r = self.cfg.resolution
                rng = np.random.default_rng([self.cfg.seed, i])
                image = Image.open(self.paths[i % len(self.paths)]).convert("RGB").resize((r, r))
                x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 127.5 - 1
                side = int(r * np.sqrt(rng.uniform(self.cfg.min_area, self.cfg.max_area)))
                y0, x0 = rng.integers(0, r - side + 1, 2)
                mask = torch.zeros(1, r, r)
                mask[:, y0:y0 + side, x0:x0 + side] = 1
                return {"image": x, "mask": mask}


        def train(cfg, *, on_progress=None, cancel=None) -> list:
            acc, out = start_run(cfg, "train throwaway-fill")
            root = Path(cfg.image_root) if cfg.image_root else Path(cfg.manifest).parent
            paths = [root / entry["image"] for _, entry in json_objects(Path(cfg.manifest))]  # the shared reader
            net = FillNet.from_dir(resolve_name(cfg.init, locate=locate, tiny=ensure_tiny)).train()

            def micro_step(model, batch, gen):
                x, mask = batch["image"], batch["mask"]
                y = model(x * (1 - mask), mask)
                return ((((y - x).abs() * mask).sum() / mask.sum().clamp(min=1)),)

            def export(ema):
                with building(out / "final", "train throwaway-fill") as tmp:
                    export_copy(net, ema.shadow if ema is not None else None).save(tmp)
                return out / "final"

            def load_weights(weights, where):
                net.load_state_dict(weights)

            recipe = Recipe(task="train throwaway-fill", model=net, params=list(net.parameters()),
                            named=list(net.named_parameters()), dataset=Holes(paths, cfg), micro_step=micro_step,
                            lr_lambda=lambda s: warmup_factor(s, cfg.warmup_steps),
                            weights=lambda: {k: v.detach() for k, v in net.state_dict().items()},
                            load_weights=load_weights, export=export)
            return fit(cfg, acc, out, recipe, on_progress=on_progress, cancel=cancel)["losses"]
    ''',
}


def write_package(root: Path) -> Path:
    pkg = root / PACKAGE
    pkg.mkdir()
    for name, text in SOURCES.items():
        (pkg / name).write_text(textwrap.dedent(text).lstrip())
    return pkg


@pytest.fixture(scope="module")
def package_root(tmp_path_factory) -> Any:
    """The package on ``sys.path`` and registered (its ``options`` imported); all gone afterwards."""
    root = tmp_path_factory.mktemp("engines")
    write_package(root)
    sys.path.insert(0, str(root))
    try:
        importlib.import_module(f"{PACKAGE}.options")
        yield root
    finally:
        unregister(ENGINE)
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture
def registered(package_root) -> Any:
    """The registration (put back after a test that replaced it)."""
    info = get_engine_info(ENGINE)
    yield info
    register(info)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread) -> None:
    """A tiny network on a shared machine: one torch thread (conftest's fixture)."""


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def _photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    rng = np.random.default_rng(seed)
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1)
    return (base + rng.integers(0, 30, (h, w, 3))).clip(0, 255).astype(np.uint8)


def _remove_case(folder: Path, name: str = "a") -> tuple[Path, Path]:
    image, mask = folder / f"{name}.png", folder / f"{name}-mask.png"
    Image.fromarray(_photo(90, 70)).save(image)
    m = np.zeros((70, 90), np.uint8)
    m[20:45, 30:60] = 255
    Image.fromarray(m).save(mask)
    return image, mask


# --------------------------------------------------------------------------- where it appears

def test_it_appears_in_every_help(registered, capsys) -> None:
    top = _help(capsys)
    # the line wraps once several engines train (argparse may break after a hyphen): read it unwrapped
    flat = re.sub(r"-\s+", "-", re.sub(r"\s+", " ", top))
    train_line = re.search(r" train train a model \(([^)]*)\)", flat)
    assert train_line and ENGINE in train_line[1].split(", ")
    remove = _help(capsys, "remove")
    assert f"{ENGINE} engine options (throw-away one-pass fill)" in remove
    assert f",{ENGINE}}}" in "".join(remove.split())  # one of --engine's choices
    convert = _help(capsys, "convert")
    assert f"{ENGINE}" in convert and "throw-away fill (generator.*)" in convert
    assert "take config.json from this model directory" in _help(capsys, "convert", ENGINE)
    train = _help(capsys, "train")
    assert ENGINE in train and "throw-away fill, hole filling" in train
    own = _help(capsys, "train", ENGINE)
    assert "throwaway_fill/train.example.yaml" in own and "--max-steps" in own
    assert "--export" not in own  # it declares no exporter


def test_it_appears_in_the_http_api(registered) -> None:
    from fastapi.testclient import TestClient

    from diffcompose.server import Settings, create_app

    client = TestClient(create_app(Settings()), base_url="http://127.0.0.1:7860")
    engines = {e["name"]: e for e in client.get("/api/engines").json()}
    assert engines[ENGINE]["available"] and engines[ENGINE]["default_model"] == "none"
    assert [o["name"] for o in engines[ENGINE]["tasks"]["remove"]["options"]] == ["resolution", "context"]
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert schemas["Options_throwaway_fill_remove"]["properties"]["resolution"]["minimum"] == 16
    assert ENGINE in json.dumps(doc)


def test_the_committed_http_docs_need_no_edit(registered) -> None:
    """docs/http-api.md leaves out what grows with the registry, so it is still what the
    generator writes with the new engine registered: no fourth place to edit."""
    from diffcompose.server.http_docs import openapi_document
    from diffcompose.server.reference import render_markdown

    text = render_markdown(openapi_document())
    assert ENGINE not in text
    assert text == (REPO / "docs" / "http-api.md").read_text(encoding="utf-8")


def test_a_batch_manifest_runs_it(registered, tmp_path) -> None:
    image, mask = _remove_case(tmp_path)
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps({"id": "one", "task": "remove", "engine": ENGINE, "model": "tiny",
                                    "inputs": {"image": image.name, "mask": mask.name}}) + "\n")
    out = tmp_path / "out"
    assert main(["batch", str(manifest), "-o", str(out), "--device", "cpu"]) == 0
    [result] = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert result["status"] == "ok" and result["engine"] == ENGINE, result
    done = np.asarray(Image.open(out / result["outputs"][0]))
    assert done.shape == (70, 90, 3) and not np.array_equal(done[20:45, 30:60], np.asarray(Image.open(image))[20:45, 30:60])


# --------------------------------------------------------------------------- the contract

def test_it_passes_the_contract_suite(registered) -> None:
    assert engine_kwargs(registered) == {"device": "cpu", "model": "tiny"}
    manager = EngineManager()
    try:
        for check in CONTRACT_CHECKS:
            check(manager, ENGINE, "remove")
    finally:
        manager.unload()


def test_the_suite_reads_its_facts_from_the_registration(registered) -> None:
    """Without its facts (one fixed step, the seed changes nothing) the same engine fails the suite."""
    register(dataclasses.replace(registered, contract=ContractFacts()))
    manager = EngineManager()
    try:
        with pytest.raises(AssertionError, match="another seed, same output"):
            check_seed(manager, ENGINE, "remove")
        with pytest.raises(AssertionError, match="declare ContractFacts"):
            check_progress(manager, ENGINE, "remove")
    finally:
        manager.unload()


# --------------------------------------------------------------------------- model, converter, trainer

def test_missing_weights_are_one_line_exit_3(registered, tmp_path, capsys) -> None:
    image, mask = _remove_case(tmp_path)
    assert main(["remove", str(image), "--mask", str(mask), "-o", str(tmp_path / "o.png"), "--engine", ENGINE,
                 "--device", "cpu"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no throw-away fill weights are published" in err
    assert main(["remove", str(image), "--mask", str(mask), "-o", str(tmp_path / "o.png"), "--engine", ENGINE,
                 "--device", "cpu", "--model", str(tmp_path / "nowhere")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err and "diffcompose convert throwaway-fill" in err


def test_its_converter_writes_a_model_folder_that_loads(registered, tmp_path, capsys) -> None:
    import torch
    from safetensors.torch import save_file

    net_module = importlib.import_module(f"{PACKAGE}.net")
    with torch.random.fork_rng():
        torch.manual_seed(3)
        published = net_module.FillNet(hidden=5)
    state = {f"generator.{k}": v.contiguous() for k, v in published.state_dict().items()}
    state["discriminator.weight"] = torch.zeros(2)  # what a published checkpoint also holds
    ckpt = tmp_path / "published.safetensors"
    save_file(state, str(ckpt))
    out = tmp_path / "converted"
    assert main(["convert", ENGINE, str(ckpt), str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    loaded = net_module.FillNet.from_dir(out)
    assert loaded.hidden == 5
    for k, v in published.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert main(["convert", ENGINE, str(ckpt), str(out)]) == 2  # exists: --force replaces it
    assert "--force" in capsys.readouterr().err
    image, mask = _remove_case(tmp_path)
    assert main(["remove", str(image), "--mask", str(mask), "-o", str(tmp_path / "o.png"), "--engine", ENGINE,
                 "--device", "cpu", "--model", str(out)]) == 0
    assert Image.open(tmp_path / "o.png").size == (90, 70)


def test_its_trainer_trains_on_the_shared_loop(registered, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.fromarray(_photo(40, 40, seed=i)).save(data / f"{i}.png")
    (data / "train.jsonl").write_text("".join(json.dumps({"image": f"{i}.png"}) + "\n" for i in range(3)))
    config = tmp_path / "fill.yaml"
    config.write_text("data:\n  manifest: data/train.jsonl\n  resolution: 64\n"
                      "train:\n  output_dir: run\n  max_steps: 50\n  batch_size: 2\n")
    run = tmp_path / "run"
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # the process-wide state remembers an earlier run's precision
    try:
        assert main(["train", ENGINE, "--config", str(config), "--max-steps", "2", "--output-dir", str(run)]) == 0
    finally:
        AcceleratorState._reset_state()
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{run / 'final'} (last loss ") and line.endswith(")"), line
    assert (run / "checkpoint-0000002").is_dir()
    state = json.loads((run / "checkpoint-0000002" / "state.json").read_text())
    assert state["step"] == 2 and len(state["losses"]) == 2
    # What it wrote is a model folder the engine loads, and a resumed run goes on from its checkpoint.
    image, mask = _remove_case(tmp_path)
    assert main(["remove", str(image), "--mask", str(mask), "-o", str(tmp_path / "o.png"), "--engine", ENGINE,
                 "--device", "cpu", "--model", str(run / "final")]) == 0
    try:
        assert main(["train", ENGINE, "--config", str(config), "--max-steps", "3", "--output-dir", str(run),
                     "--resume", "latest"]) == 0
    finally:
        AcceleratorState._reset_state()
    assert json.loads((run / "checkpoint-0000003" / "state.json").read_text())["losses"][:2] == state["losses"]


def test_a_target_without_module_and_name_fails_at_registration(registered) -> None:
    from diffcompose.methods.registry import Converter, Trainer

    with pytest.raises(ValueError, match="'throwaway_fill.convert.convert'"):
        dataclasses.replace(registered, converter=Converter("throwaway_fill.convert.convert", "h", "d", "l"))
    with pytest.raises(ValueError, match="'train'"):
        dataclasses.replace(registered, trainer=Trainer("throwaway_fill.config:load_config", "train", "x", "h", "d"))
    with pytest.raises(ValueError, match="':ensure_tiny'"):
        dataclasses.replace(registered, tiny=":ensure_tiny")


def test_the_train_command_ends_with_the_last_losses_of_any_history() -> None:
    """A trainer returns a list of losses, or a dataclass of curves whose first is the total."""
    from diffcompose.cli.train import last_losses

    @dataclasses.dataclass
    class Curves:
        loss: list = dataclasses.field(default_factory=list)
        noise: list = dataclasses.field(default_factory=list)
        dice: list = dataclasses.field(default_factory=list)

    assert last_losses([0.5, 0.25]) == "last loss 0.2500"
    assert last_losses(Curves([0.5, 0.125], [0.4, 0.1], [0.2, 0.05])) == "last loss 0.1250: noise 0.1000, dice 0.0500"
    assert last_losses([]) == "" and last_losses(Curves()) == ""  # resumed at max_steps: no step ran


def test_its_help_and_checks_import_no_torch(package_root, tmp_path) -> None:
    """Registered, it keeps ``--help`` and the argument checks of convert/train light."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import throwaway_fill.options; "
            "from diffcompose.cli.main import main\n"
            "for argv in (['convert', '--help'], ['train', '--help'], ['remove', '--help']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "rc = main(['convert', 'throwaway-fill', 'missing.safetensors', 'out'])\n"
            "sys.stdout.write(f\"{rc} {'torch' in sys.modules}\")")
    p = subprocess.run([sys.executable, "-c", code, str(package_root)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert p.stdout.strip().endswith("2 False"), (p.stdout[-300:], p.stderr[-300:])


def test_every_trainer_ships_an_example_config_its_reader_accepts(registered, tmp_path) -> None:
    """The example a trainer's help names lives in its package and is a valid config of that
    trainer (built-in engines and the throw-away one alike): it is read by the trainer's own
    reader, beside stand-ins for the data files it names."""
    import importlib
    import shutil

    import yaml

    from diffcompose.methods.registry import all_engines, load_target, split_target

    trainers = [info for info in all_engines() if info.trainer is not None]
    assert ENGINE in {info.name for info in trainers}
    for info in trainers:
        example = Path(info.trainer.example)
        example = example if example.is_absolute() else REPO / example
        assert example.is_file(), f"{info.name}: {info.trainer.example} is missing"
        module = importlib.import_module(split_target(info.trainer.config)[0])
        assert example.parent == Path(module.__file__).parent, f"{info.name}: the example is not in its package"
        folder = tmp_path / info.name
        folder.mkdir()
        data = (yaml.safe_load(example.read_text()) or {}).get("data") or {}
        for key in ("manifest", "captions"):
            if isinstance(data.get(key), str):
                (folder / data[key]).parent.mkdir(parents=True, exist_ok=True)
                (folder / data[key]).touch()
        if isinstance(data.get("image_root"), str):
            (folder / data["image_root"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(example, folder / example.name)
        load_target(info.trainer.config)(folder / example.name)  # a stale example fails in one line here
