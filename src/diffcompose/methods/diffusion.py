"""What every diffusion engine shares: device and dtype chosen once, memory accounting, unloading."""

from __future__ import annotations

import gc
import logging

import torch

from diffcompose.methods.engine import Engine
from diffcompose.models.device import pick_device, pick_dtype

log = logging.getLogger(__name__)


class DiffusionEngine(Engine):
    """An engine holding torch modules. Subclasses load in ``_load`` and list them in :meth:`modules`."""

    device: torch.device
    dtype: torch.dtype

    def _resolve_device(self) -> None:
        """cuda (fp16, bf16 where fp16 is slow) > mps > cpu (fp32), unless the constructor said otherwise."""
        self.device = pick_device(self.device_name)
        self.dtype = pick_dtype(self.device, self.dtype_name)

    def modules(self) -> list[torch.nn.Module]:
        return []

    def memory_bytes(self) -> int:
        if not self.loaded:
            return 0
        seen: set[int] = set()
        total = 0
        for module in self.modules():
            for t in list(module.parameters()) + list(module.buffers()):
                if id(t) not in seen:
                    seen.add(id(t))
                    total += t.numel() * t.element_size()
        return total

    def _unload(self) -> None:
        for name in list(vars(self)):
            if name not in ("device_name", "dtype_name", "model", "lock", "_loaded", "device", "dtype"):
                delattr(self, name)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.debug("unloaded %s", self.name)
