"""VGG16 convolutional features in plain torch, for the perceptual loss.

The layer indices match torchvision's ``vgg16().features`` (conv at 0, 2, 5, ...; ReLU
after each; max-pool at 4, 9, 16, 23, 30), so weights stored with keys
``features.N.weight`` / ``features.N.bias`` load as they are. The default source is the
hub repository ``timm/vgg16.tv_in1k`` (torchvision's ImageNet VGG16 weights in
``model.safetensors``; its ``pre_logits``/``head`` keys are ignored). A local
``*.safetensors`` file or a directory holding ``model.safetensors`` (and optionally a
``config.json`` with ``widths``, as the tiny model writes) works too.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

#: The hub repository the real weights come from.
DEFAULT_VGG = "timm/vgg16.tv_in1k"
#: Convs per stage; after stage s's last ReLU comes relu{s+1}_{n} (the LPIPS taps).
_STAGES = (2, 2, 3, 3, 3)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    """``features`` of VGG16 up to relu5_3; :meth:`forward` returns the five LPIPS taps."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512, 512)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        self.taps: list[int] = []
        cin = 3
        for stage, (n, w) in enumerate(zip(_STAGES, widths)):
            if stage:
                layers.append(nn.MaxPool2d(2, 2))
            for _ in range(n):
                layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(inplace=False)]
                cin = w
            self.taps.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)
        self.widths = tuple(widths)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image01: torch.Tensor) -> list[torch.Tensor]:
        """Features relu1_2 .. relu5_3 of an RGB batch in [0, 1]."""
        x = (image01 - self.mean.to(image01.dtype)) / self.std.to(image01.dtype)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
                if len(out) == len(self.taps):
                    break
        return out


def load_vgg16_file(path: Path) -> VGG16Features:
    """Build a VGG16 from a safetensors file (or a directory with ``model.safetensors``)."""
    from diffcompose.errors import WeightsMissingError
    from diffcompose.models.hub import read_json, read_safetensors

    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise WeightsMissingError(f"VGG16 weights not found: {file}")
    widths = (64, 128, 256, 512, 512)
    cfg = file.parent / "config.json"
    if cfg.is_file():
        widths = tuple(read_json(cfg, "VGG16 config").get("widths", widths))
    state = {k: v for k, v in read_safetensors(file, "VGG16 weights").items() if k.startswith("features.")}
    model = VGG16Features(widths)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsMissingError(f"{file} is not a VGG16 'features' checkpoint (missing {len(missing)} tensors)")
    return model.eval().requires_grad_(False)
