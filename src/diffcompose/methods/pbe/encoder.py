"""The exemplar encoder: CLIP vision pooled output -> mapper -> LayerNorm -> Linear.

The reference photo becomes **one** token: CLIP's pooled CLS feature (after its
post-layernorm) goes through a small pre-norm transformer (the "mapper", one head), a final
LayerNorm and a projection to the UNet's cross-attention width. This narrow bottleneck is
what makes the model copy the *look* of the object rather than paste its pixels.
``uncond_vector`` is the learned context used for the unconditional branch of
classifier-free guidance.

Parameter names follow the published diffusers layout of ``image_encoder/`` (e.g.
``mapper.blocks.0.attn1.to_q.weight``), so the hub's weights and our converted or trained
checkpoints load into this module without renaming.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from diffcompose.errors import WeightsMissingError
from diffcompose.models.hub import read_json

WEIGHTS_NAME = "model.safetensors"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"


class SelfAttention(nn.Module):
    """Single-head self-attention with biased q/k/v/out projections."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.to_q = nn.Linear(width, width)
        self.to_k = nn.Linear(width, width)
        self.to_v = nn.Linear(width, width)
        self.to_out = nn.ModuleList([nn.Linear(width, width)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        return self.to_out[0](F.scaled_dot_product_attention(q, k, v))


class _InProj(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x))


class MLP(nn.Module):
    """Linear -> exact GELU -> Linear, 4x wide (``net.1`` is a parameter-free slot)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([_InProj(width, 4 * width), nn.Identity(), nn.Linear(4 * width, width)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class MapperBlock(nn.Module):
    """Pre-norm residual block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn1 = SelfAttention(width)
        self.norm3 = nn.LayerNorm(width)
        self.ff = MLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        return x + self.ff(self.norm3(x))


class Mapper(nn.Module):
    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([MapperBlock(width) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def default_mapper_layers(config: CLIPVisionConfig) -> int:
    """Mapper depth implied by a CLIP config in the published layout (24 CLIP layers -> 5)."""
    return max(1, (config.num_hidden_layers + 1) // 5)


#: What the mapper reads: CLIP's pooled CLS feature, one token (Paint-by-Example), or every
#: token of the last layer after CLIP's post-layernorm, CLS and patches (ObjectStitch's
#: content adaptor: 257 tokens for ViT-L/14 at 224). The weights are the same families.
TOKEN_MODES = ("pooled", "patches")


class ExemplarEncoder(nn.Module):
    """Reference pixels (CLIP-normalised, 224x224) -> ``(B, T, proj_size)`` context (T = 1 when pooled)."""

    def __init__(self, config: CLIPVisionConfig, mapper_layers: int | None = None, tokens: str = "pooled") -> None:
        super().__init__()
        if tokens not in TOKEN_MODES:
            raise ValueError(f"token mode must be one of {TOKEN_MODES}, got {tokens!r}")
        self.tokens = tokens
        self.config = config
        width = config.hidden_size
        self.proj_size = int(getattr(config, "projection_dim", 768))
        self.model = CLIPVisionModel(config)
        self.mapper = Mapper(width, mapper_layers or default_mapper_layers(config))
        self.final_layer_norm = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, self.proj_size)
        self.uncond_vector = nn.Parameter(torch.randn(1, 1, self.proj_size))

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values)
        if self.tokens == "patches":  # every token, through CLIP's post-layernorm
            tower = getattr(self.model, "vision_model", self.model)  # transformers 4 wraps it, 5 does not
            x = tower.post_layernorm(out.last_hidden_state)
        else:
            x = out.pooler_output[:, None]  # (B, 1, width), post-layernorm CLS
        return self.proj_out(self.final_layer_norm(self.mapper(x)))

    def uncond(self, batch: int, tokens: int = 1) -> torch.Tensor:
        """The learned unconditional context, repeated over ``tokens`` positions (ObjectStitch: as many as the condition)."""
        return self.uncond_vector.expand(batch, tokens, -1)

    # ------------------------------------------------------------------ files
    def save_pretrained(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        cfg = self.config.to_dict()
        cfg["architectures"] = ["PaintByExampleImageEncoder"]
        cfg["mapper_layers"] = len(self.mapper.blocks)
        if self.tokens != "pooled":  # Paint-by-Example's files stay as published
            cfg["token_mode"] = self.tokens
        (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, directory: str | Path, torch_dtype: torch.dtype | None = None,
                        **_: object) -> "ExemplarEncoder":
        """Load a saved encoder (``torch_dtype`` and ignored keywords match the shared loader's call)."""
        root = Path(directory)
        cfg_path = root / "config.json"
        if not cfg_path.exists():
            raise WeightsMissingError(f"image encoder config not found: {cfg_path}")
        raw = read_json(cfg_path, "image encoder config")
        mapper_layers = raw.pop("mapper_layers", None)
        tokens = raw.pop("token_mode", "pooled")
        config = CLIPVisionConfig.from_dict(raw)
        state = load_state_file(root, "image encoder")
        if mapper_layers is None:  # published configs do not store it: count the blocks
            blocks = {k.split(".")[2] for k in state if k.startswith("mapper.blocks.")}
            mapper_layers = len(blocks) or None
        with torch.device("meta"):
            enc = cls(config, mapper_layers, tokens)
        state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
        missing, unexpected = enc.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise WeightsMissingError(
                f"image encoder weights in {root} do not match its config "
                f"(missing {len(missing)}, e.g. {missing[:1]}; unexpected {len(unexpected)}, e.g. {unexpected[:1]})")
        _rebuild_buffers(enc)
        enc.eval()
        return enc.to(torch_dtype) if torch_dtype is not None else enc


def _rebuild_buffers(enc: ExemplarEncoder) -> None:
    """Non-persistent buffers (CLIP's position ids) stay on meta after ``assign``: recreate them."""
    for module in enc.modules():
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.is_meta:
                if name == "position_ids":
                    module._buffers[name] = torch.arange(buf.shape[-1]).expand(buf.shape)
                else:
                    raise RuntimeError(f"buffer {name} was not loaded")


def load_state_file(root: Path, what: str) -> dict[str, torch.Tensor]:
    """``model.safetensors`` (or a legacy ``pytorch_model.bin`` read with ``weights_only``)."""
    st = root / WEIGHTS_NAME
    if st.exists():
        from diffcompose.models.hub import read_safetensors

        return read_safetensors(st, f"{what} weights")
    legacy = root / LEGACY_WEIGHTS_NAME
    if legacy.exists():
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise WeightsMissingError(f"{what} weights not found in {root} (expected {WEIGHTS_NAME})")
