"""``convert brushnet``: the public key families (written out here, and from the public module itself when
the mirror is present), the folder loaded as it is, one-line errors."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from safetensors.torch import save_file  # noqa: E402

from diffcompose.errors import InputError  # noqa: E402
from diffcompose.methods.brushnet.convert import convert_brushnet, map_keys  # noqa: E402
from diffcompose.methods.brushnet.model import BrushNetModel  # noqa: E402
from diffcompose.methods.brushnet.tiny import build_tiny_brushnet  # noqa: E402
from diffcompose.models.tiny import tiny_unet_config  # noqa: E402

import brushnet_public  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

RESNET = ("norm1", "conv1", "time_emb_proj", "norm2", "conv2")


def public_plain_keys(widths=(32, 32, 64, 64), layers=2) -> set[str]:
    """The state-dict keys of TencentARC's (attention-free) ``BrushNetModel`` for a geometry, written out
    from its ``__init__``: conv_in_condition; the time MLP; down blocks of ``layers`` resnets (+ a
    downsampler but the last); one zero conv for conv_in's output, each down resnet and downsampler;
    a mid block of two resnets and its zero conv; up blocks of ``layers + 1`` resnets (+ an upsampler
    but the last), each with a zero conv."""
    keys = {"conv_in_condition.weight", "conv_in_condition.bias"}
    keys |= {f"time_embedding.linear_{i}.{p}" for i in (1, 2) for p in ("weight", "bias")}

    def resnet(prefix: str, shortcut: bool) -> set[str]:
        names = RESNET + (("conv_shortcut",) if shortcut else ())
        return {f"{prefix}.{n}.{p}" for n in names for p in ("weight", "bias")}

    n, zero_down, zero_up = len(widths), 1, 0
    prev = widths[0]
    for i, w in enumerate(widths):
        for j in range(layers):
            keys |= resnet(f"down_blocks.{i}.resnets.{j}", shortcut=(j == 0 and prev != w))
        zero_down += layers
        if i < n - 1:
            keys |= {f"down_blocks.{i}.downsamplers.0.conv.{p}" for p in ("weight", "bias")}
            zero_down += 1
        prev = w
    keys |= resnet("mid_block.resnets.0", False) | resnet("mid_block.resnets.1", False)
    for i in range(n):
        for j in range(layers + 1):
            keys |= resnet(f"up_blocks.{i}.resnets.{j}", shortcut=True)  # every up resnet takes [h, skip]
        zero_up += layers + 1
        if i < n - 1:
            keys |= {f"up_blocks.{i}.upsamplers.0.conv.{p}" for p in ("weight", "bias")}
            zero_up += 1
    keys |= {f"brushnet_down_blocks.{k}.{p}" for k in range(zero_down) for p in ("weight", "bias")}
    keys |= {f"brushnet_up_blocks.{k}.{p}" for k in range(zero_up) for p in ("weight", "bias")}
    keys |= {"brushnet_mid_block.weight", "brushnet_mid_block.bias"}
    return keys


def test_our_module_has_exactly_the_public_keys():
    ours = build_tiny_brushnet()
    assert set(ours.state_dict()) == public_plain_keys()
    assert sum(k.startswith("brushnet_down_blocks.") for k in public_plain_keys()) == 2 * 12
    assert sum(k.startswith("brushnet_up_blocks.") for k in public_plain_keys()) == 2 * 15


def _public_state(shapes_from: BrushNetModel, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict under the written-out public key list (shapes looked up by name in ours)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in shapes_from.state_dict().items()}
    return {k: torch.randn(shapes[k], generator=g) for k in sorted(public_plain_keys())}


def test_single_file_with_the_public_keys_converts_and_loads(tmp_path):
    """A single-file state dict (fp16, wrapped in ``module.``) with --like a tiny SD model: every family mapped."""
    from diffcompose.models.tiny import ensure_tiny_model

    state = _public_state(build_tiny_brushnet())
    save_file({f"module.{k}": v.half() for k, v in state.items()}, str(tmp_path / "brushnet_fp16.safetensors"))
    out = convert_brushnet(tmp_path / "brushnet_fp16.safetensors", tmp_path / "out", like=ensure_tiny_model())
    loaded = BrushNetModel.from_pretrained(str(out))
    assert not loaded.has_cross_attention
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k].half().float()), k
    assert json.loads((out / "config.json").read_text())["mid_block_type"] == "MidBlock2D"


def test_a_torch_file_with_state_dict_and_a_config_beside_it(tmp_path):
    """The public folder's own files: ``diffusion_pytorch_model.bin`` (``state_dict`` wrapper) + its config.json."""
    ours = build_tiny_brushnet(cross_attention=True, seed=2)
    ours.save_pretrained(tmp_path / "folder", safe_serialization=False)
    ckpt = tmp_path / "folder" / "diffusion_pytorch_model.bin"
    torch.save({"state_dict": torch.load(ckpt, weights_only=True)}, ckpt)
    out = convert_brushnet(ckpt, tmp_path / "out")
    loaded = BrushNetModel.from_pretrained(str(out))
    assert loaded.has_cross_attention
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), ours.state_dict().values()))


def test_errors_are_one_line(tmp_path):
    state = _public_state(build_tiny_brushnet())
    with pytest.raises(InputError, match="unknown keys controlnet_cond_embedding.conv_in.weight"):
        map_keys({**state, "controlnet_cond_embedding.conv_in.weight": torch.zeros(1)})
    with pytest.raises(InputError, match="no zero-convolution keys"):
        map_keys({k: v for k, v in state.items() if not k.startswith("brushnet_")})
    save_file(state, str(tmp_path / "b.safetensors"))
    with pytest.raises(InputError, match="do not fit") as err:  # tiny weights, SD-1.5's default geometry
        convert_brushnet(tmp_path / "b.safetensors", tmp_path / "out")
    assert "\n" not in str(err.value)
    del state["brushnet_mid_block.bias"]
    save_file(state, str(tmp_path / "c.safetensors"))
    with pytest.raises(InputError, match="1 missing"):
        convert_brushnet(tmp_path / "c.safetensors", tmp_path / "out2", like=_tiny_like(tmp_path))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def _tiny_like(tmp_path):
    (tmp_path / "like" / "unet").mkdir(parents=True, exist_ok=True)
    (tmp_path / "like" / "unet" / "config.json").write_text(json.dumps(tiny_unet_config()))
    return tmp_path / "like"


def test_the_cli_converts(tmp_path, capsys):
    from diffcompose.cli.main import main

    save_file(_public_state(build_tiny_brushnet()), str(tmp_path / "b.safetensors"))
    assert main(["convert", "brushnet", str(tmp_path / "b.safetensors"), str(tmp_path / "out"), "--like",
                 str(_tiny_like(tmp_path))]) == 0
    assert (tmp_path / "out" / "diffusion_pytorch_model.safetensors").is_file()
    assert main(["convert", "brushnet", str(tmp_path / "nope.safetensors"), str(tmp_path / "o2")]) == 2


@pytest.mark.parametrize("cross_attention", [False, True])
def test_a_state_dict_from_the_public_module_converts_and_a_public_folder_loads_as_is(tmp_path_factory, tmp_path,
                                                                                     cross_attention):
    """Built from the public module definitions (the fork's ``BrushNetModel.from_unet``; PowerPaint's
    ``BrushNet_CA.from_unet`` for the cross-attention variant) and saved by their own ``save_pretrained``:
    the folder loads directly into ours, and its weights file converts, with the same tensors."""
    try:
        if cross_attention:
            public = brushnet_public.load_powerpaint_ca(tmp_path_factory.mktemp("pp"))
        else:
            public = brushnet_public.load_brushnet_fork(tmp_path_factory.mktemp("fork"))
    except LookupError as exc:
        pytest.skip(f"public code unavailable: {exc}")
    unet = public.UNet2DConditionModel(**tiny_unet_config())
    branch = public.BrushNetModel.from_unet(unet)
    branch.save_pretrained(tmp_path / "public", safe_serialization=True)
    direct = BrushNetModel.from_pretrained(str(tmp_path / "public"))
    assert direct.has_cross_attention is cross_attention
    out = convert_brushnet(tmp_path / "public" / "diffusion_pytorch_model.safetensors", tmp_path / "out")
    converted = BrushNetModel.from_pretrained(str(out))
    want = branch.state_dict()
    for model in (direct, converted):
        got = model.state_dict()
        assert set(got) == set(want)
        assert all(torch.equal(got[k], want[k]) for k in want)
    if not cross_attention:
        assert set(want) == public_plain_keys()
