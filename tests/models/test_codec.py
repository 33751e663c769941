"""The VAE codec's contract with the engines that call it."""

from __future__ import annotations

import torch

from diffcompose.models import codec
from diffcompose.models.tiny import tiny_vae_config


def test_several_posterior_samples_from_one_encoder_pass_equal_encoding_the_repeated_batch() -> None:
    """PowerPaint v2 (as its public pipeline) draws one posterior sample per guidance half; ``samples``
    gives those draws without encoding the copies, so the encoder runs once."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**tiny_vae_config()).eval()
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    calls = []
    vae.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.no_grad():
        repeated = codec.encode(vae, images.expand(3, -1, -1, -1), torch.Generator().manual_seed(7))
        once = codec.encode(vae, images, torch.Generator().manual_seed(7), samples=3)
    assert calls == [3, 1]
    torch.testing.assert_close(once, repeated, atol=1e-5, rtol=0)
    assert not torch.allclose(once[0], once[1])  # three draws, not one copied
