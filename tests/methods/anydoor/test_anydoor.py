"""AnyDoor's model (``methods/anydoor/model.py``) and engine, on tiny random weights on the CPU.

What is pinned: the zero-``conv_in`` ControlNet is the public ControlNet (which starts from
the hint embedding and never sees the noisy latent); the one batched guidance call per step
equals the public two-pass step; the ID extractor follows the public encoder (post-norm CLS
+ patch tokens, zeros-before-normalisation unconditional context, DINOv2's own position
embedding resampling); seeds; bit-identical pixels outside the expanded target box.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffcompose.methods.anydoor import model as M  # noqa: E402
from diffcompose.methods.anydoor.tiny import build_tiny_anydoor  # noqa: E402


#: Tiny models gain nothing from intra-op threads on the shared 2-core machine (conftest's fixture).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_anydoor(seed=3).eval()


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Non-zero weights everywhere (diffusers zero-initialises the ControlNet's output convs, which
    would make any residual comparison vacuous), keeping ``conv_in`` at zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not name.startswith("conv_in."):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _inputs(seed: int = 0, n: int = 2, size: int = 128):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(n, 4, size // 8, size // 8, generator=g)
    hint = torch.cat([torch.rand(n, 3, size, size, generator=g) * 2 - 1,
                      (torch.rand(n, 1, size, size, generator=g) > 0.5).float()], 1)
    return latents, hint


def public_controlnet(cn, hint: torch.Tensor, t: torch.Tensor, context: torch.Tensor):
    """The public ControlNet's forward written out: the first input block is skipped, ``h`` starts
    as the hint embedding; each block's output and the middle block's go through their zero convs."""
    emb = cn.time_embedding(cn.time_proj(t.expand(hint.shape[0])).to(hint.dtype))
    h = cn.controlnet_cond_embedding(hint)
    feats = [h]
    for block in cn.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, res = block(h, emb, encoder_hidden_states=context)
        else:
            h, res = block(h, emb)
        feats.extend(res)
    h = cn.mid_block(h, emb, encoder_hidden_states=context)
    down = [conv(f) for conv, f in zip(cn.controlnet_down_blocks, feats)]
    return down, cn.controlnet_mid_block(h)


def test_zero_conv_in_controlnet_is_the_public_one(tiny):
    """Deleting ``zero_conv_in`` (or feeding the latent in) makes the residuals differ from the public ones."""
    cn = tiny.controlnet
    _randomise(cn, 1)
    latents, hint = _inputs()
    context = torch.randn(2, 257, cn.config.cross_attention_dim)
    t = torch.tensor(421)
    with torch.no_grad():
        down, mid = cn(latents, t, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False)
        other, _ = cn(torch.randn_like(latents) * 5, t, encoder_hidden_states=context, controlnet_cond=hint,
                      return_dict=False)
        ref_down, ref_mid = public_controlnet(cn, hint, t, context)
    assert len(down) == len(ref_down) == 12  # + the middle one: the public model's 13 residuals
    for a, b, c in zip(down, ref_down, other):
        assert a.abs().max() > 1e-3
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)  # the noisy latent does not enter
    torch.testing.assert_close(mid, ref_mid, atol=1e-5, rtol=1e-5)
    assert not cn.conv_in.weight.requires_grad


def test_set_trainable_keeps_conv_in_and_encoders_frozen(tiny):
    """The published trained parts: ControlNet (not conv_in), UNet decoder + output, projector."""
    params = {id(p) for p in M.set_trainable(tiny)}
    assert id(tiny.controlnet.conv_in.weight) not in params
    assert id(tiny.controlnet.controlnet_mid_block.weight) in params
    assert id(tiny.unet.up_blocks[0].resnets[0].conv1.weight) in params
    assert id(tiny.unet.conv_out.weight) in params
    assert id(tiny.id_extractor.projector.weight) in params
    assert id(tiny.unet.down_blocks[0].resnets[0].conv1.weight) not in params
    assert id(tiny.unet.mid_block.resnets[0].conv1.weight) not in params
    assert not any(id(p) in params for p in tiny.id_extractor.dinov2.parameters())
    tiny.requires_grad_(False)


def test_batched_guidance_step_equals_two_passes(tiny):
    """One batched ``[uncond, cond]`` call per step == the public sampler's two calls, to 1e-5."""
    from diffcompose.models.sampling import guide

    _randomise(tiny.controlnet, 2)
    latents, hint = _inputs(1, n=1)
    ref = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        cond, uncond = tiny.id_extractor(ref), tiny.id_extractor.uncond(1)
        fn = M.guided_model_fn(tiny, hint, cond, uncond, control_strength=0.7)
        for t in (torch.tensor(981), torch.tensor(1)):
            batched = guide(*fn(torch.cat([latents, latents]), t).chunk(2), 5.0)
            two = M.two_pass_prediction(tiny, latents, t, hint, cond, uncond, 5.0, control_strength=0.7)
            torch.testing.assert_close(batched, two, atol=1e-5, rtol=1e-5)
            assert (two - M.two_pass_prediction(tiny, latents, t, hint, cond, uncond, 1.0, 0.7)).abs().max() > 1e-4


def _explicit_imagenet(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (images - mean) / std


def test_id_tokens_are_post_norm_cls_and_patches(tiny):
    """ID tokens = projector([layernorm(CLS), layernorm(patches)]); uncond = zeros before normalisation."""
    ext = tiny.id_extractor
    ref = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        tokens = ext(ref)
        hidden = ext.dinov2(pixel_values=_explicit_imagenet(ref)).last_hidden_state
        expect = ext.projector(hidden)
        uncond = ext.uncond(1)
        zeros = ext.projector(ext.dinov2(pixel_values=_explicit_imagenet(torch.zeros(1, 3, 224, 224)))
                              .last_hidden_state)
    assert tokens.shape == (2, 257, tiny.unet.config.cross_attention_dim)
    torch.testing.assert_close(tokens, expect)
    torch.testing.assert_close(uncond, zeros)
    assert (uncond - ext.projector(ext.dinov2(pixel_values=torch.zeros(1, 3, 224, 224)).last_hidden_state)
            ).abs().max() > 1e-3  # zeros after normalisation would be another context


def test_position_embeddings_use_dinov2s_own_resampling():
    """The public code resamples with scale_factor (grid + 0.1) / side, which is not transformers' size=grid."""
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(1, 1 + 37 * 37, 8, generator=g)
    ours = M.public_position_embeddings(pos, 16)
    patches = pos[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    scale = 16.1 / 37
    expect = torch.nn.functional.interpolate(patches, scale_factor=(scale, scale), mode="bicubic")
    expect = torch.cat([pos[:, :1], expect.permute(0, 2, 3, 1).reshape(1, 256, 8)], 1)
    torch.testing.assert_close(ours, expect)
    hf = torch.nn.functional.interpolate(patches, size=(16, 16), mode="bicubic", align_corners=False)
    assert (ours[:, 1:] - hf.permute(0, 2, 3, 1).reshape(1, 256, 8)).abs().max() > 1e-3
    assert math.isclose(float(ours[0, 0, 0]), float(pos[0, 0, 0]))


def test_offload_modes_give_the_same_prediction_on_cpu(tiny):
    """On a CPU device offloading is a no-op: same numbers, parts stay where they were."""
    latents, hint = _inputs(2, n=1)
    ctx = torch.randn(1, 257, tiny.unet.config.cross_attention_dim)
    with torch.no_grad():
        plain = tiny(latents, torch.tensor(500), hint, ctx)
        with M.Offload(tiny, torch.device("cpu"), "model") as off, off.stage(tiny.unet, tiny.controlnet):
            again = tiny(latents, torch.tensor(500), hint, ctx)
        M.set_attention_slicing(tiny, True)
        sliced = tiny(latents, torch.tensor(500), hint, ctx)
        M.set_attention_slicing(tiny, False)
    torch.testing.assert_close(plain, again)
    torch.testing.assert_close(plain, sliced, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_forced_offload_hooks_leave_the_model_as_it_was(tiny, mode):
    """The offload paths (normally GPU-only) forced on the CPU: same prediction inside, and after
    leaving, the hooks are gone and every weight is a real tensor again (no meta leftovers)."""
    latents, hint = _inputs(4, n=1)
    ctx = torch.randn(1, 257, tiny.unet.config.cross_attention_dim)
    with torch.no_grad():
        plain = tiny(latents, torch.tensor(200), hint, ctx)
        off = M.Offload(tiny, torch.device("cpu"))
        off.mode = mode
        with off, off.stage(tiny.controlnet, tiny.unet):
            inside = tiny(latents, torch.tensor(200), hint, ctx)
        after = tiny(latents, torch.tensor(200), hint, ctx)
    torch.testing.assert_close(inside, plain)
    torch.testing.assert_close(after, plain)
    assert all(p.device.type == "cpu" for p in tiny.parameters())
    assert not any(hasattr(mod, "_hf_hook") for mod in tiny.modules())


def test_saved_model_loads_to_the_same_predictions(tmp_path, tiny):
    """save_anydoor -> load_anydoor (the layout convert, tiny and training write) round-trips exactly."""
    root = M.save_anydoor(tiny, tmp_path / "m")
    loaded = M.load_anydoor(root)
    latents, hint = _inputs(3, n=1)
    ref = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        a = tiny(latents, torch.tensor(300), hint, tiny.id_extractor(ref))
        b = loaded(latents, torch.tensor(300), hint, loaded.id_extractor(ref))
    torch.testing.assert_close(a, b)
    assert loaded.id_extractor.dinov2.config.image_size == 224
    (root / "id_projector" / "model.safetensors").unlink()
    from diffcompose.errors import WeightsMissingError

    with pytest.raises(WeightsMissingError, match="id_projector/model.safetensors"):
        M.load_anydoor(root)



@pytest.mark.parametrize("path, text, fragment", [
    ("id_projector/config.json", "{not json", "AnyDoor ID projector config .* is not readable JSON"),
    ("id_projector/config.json", "{}", "needs a positive whole out_features, got None"),
    ("scheduler/scheduler_config.json", "[1, 2]", "AnyDoor scheduler config .* is not a JSON object"),
])
def test_a_malformed_model_folder_is_one_line(tmp_path, tiny, path, text, fragment):
    from diffcompose.errors import InputError

    root = M.save_anydoor(tiny, tmp_path / "m")
    (root / path).write_text(text)
    with pytest.raises(InputError, match=fragment) as err:
        M.load_anydoor(root)
    assert "\n" not in str(err.value)


def test_reference_to_tensor_scales_to_unit_range():
    img = np.full((224, 224, 3), 255, np.uint8)
    img[0, 0] = (0, 51, 102)
    x = M.reference_to_tensor(img)
    assert x.shape == (1, 3, 224, 224) and float(x.max()) == 1.0
    assert x[0, :, 0, 0].tolist() == pytest.approx([0.0, 0.2, 0.4])


# ----------------------------------------------------------------------------- the engine

@pytest.fixture(scope="module")
def engine():
    from diffcompose.methods.anydoor.engine import AnyDoorEngine

    return AnyDoorEngine.from_model(build_tiny_anydoor(seed=7).eval())


def _scene():
    """A real photo (scikit-image's astronaut, odd size) with a box target and a cat reference with its mask."""
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[10:231, 30:327])  # 297 x 221
    mask = np.zeros(image.shape[:2], bool)
    mask[90:150, 120:200] = True
    ref = data.chelsea()
    ref_mask = np.zeros(ref.shape[:2], bool)
    ref_mask[40:260, 90:360] = True
    return image, mask, ref, ref_mask


def _insert(engine, seed=0, **kw):
    image, mask, ref, ref_mask = _scene()
    kw = {"steps": 2, "reference_mask": ref_mask, **kw}
    return np.asarray(engine.insert(image, mask, ref, seed=seed, **kw))


def test_same_seed_same_output_and_seeded_ratios(engine):
    """Noise *and* the published random crop ratio come from the seed (the public demo ignores it)."""
    a, b = _insert(engine, seed=4), _insert(engine, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, _insert(engine, seed=5))
    from diffcompose.methods.anydoor import preprocess as P

    draws = {P.draw_ratios(np.random.default_rng(s)).crop for s in range(12)}
    assert len(draws) > 1  # the seed does pick the crop


def test_pixels_outside_the_expanded_box_are_kept(engine):
    """Outside the expanded target box (plus the seam) the original pixels, bit for bit; inside, the result."""
    from diffcompose.methods.anydoor import preprocess as P
    from diffcompose.regions import default_margin

    image, mask, _, _ = _scene()
    out = _insert(engine, seed=1, box_ratio=1.2, crop_ratio=2.0)
    box = P.expand_box(P.mask_box(mask), 1.2, image.shape)
    expanded = np.zeros(mask.shape, bool)
    expanded[box[0]:box[1], box[2]:box[3]] = True
    from diffcompose.inputs import dilate_mask

    keep = ~dilate_mask(expanded, default_margin(image.shape))
    assert np.array_equal(out[keep], image[keep])
    assert not np.array_equal(out[mask], image[mask])
    raw = _insert(engine, seed=1, box_ratio=1.2, crop_ratio=2.0, paste_back=False)
    crop = P.square_box(P.expand_box(box, 2.0, image.shape), image.shape)
    ring = np.zeros(mask.shape, bool)
    ring[crop[0] + 3:crop[1] - 3, crop[2] + 3:crop[3] - 3] = True
    ring &= keep
    assert not np.array_equal(raw[ring], image[ring])  # the raw result redraws the whole crop (public crop_back)
    assert np.array_equal(raw[~dilate_mask(ring, 4) & keep & ~ring], image[~dilate_mask(ring, 4) & keep & ~ring])


def test_missing_reference_mask_is_an_input_error(engine):
    from diffcompose.errors import InputError

    image, mask, ref, _ = _scene()
    with pytest.raises(InputError, match="reference-mask"):
        engine.insert(image, mask, ref, steps=1)


def test_masks_too_small_for_the_public_box_rule_are_input_errors(engine):
    """Below 10 pixels the public box rule takes the whole image: the engine refuses such a region or cut-out."""
    from diffcompose.errors import InputError

    image, mask, ref, ref_mask = _scene()
    speck = np.zeros(mask.shape, bool)
    speck[100, 130:139] = True  # 9 pixels
    with pytest.raises(InputError, match="target region"):
        engine.insert(image, speck, ref, reference_mask=ref_mask, steps=1)
    ref_speck = np.zeros(ref_mask.shape, bool)
    ref_speck[50, 100:109] = True
    with pytest.raises(InputError, match="reference mask"):
        engine.insert(image, mask, ref, reference_mask=ref_speck, steps=1)


def test_guidance_one_is_a_single_conditional_pass(engine, monkeypatch):
    """Scale 1 runs no unconditional branch (as the public sampler); any other scale runs it."""
    calls = []
    original = engine.m.id_extractor.uncond
    monkeypatch.setattr(engine.m.id_extractor, "uncond", lambda n, *a: calls.append(n) or original(n, *a))
    _insert(engine, guidance_scale=1.0, steps=1)
    assert calls == []
    _insert(engine, guidance_scale=0.5, steps=1)
    assert calls == [1]


@pytest.mark.slow
def test_tiny_model_end_to_end_on_a_real_photo(testdata, tmp_path):
    """``dc.insert(..., engine="anydoor", model="tiny")`` on AnyDoor's own example (RGBA reference: its alpha
    is the reference mask), through the manager, the loader and the cached tiny directory; and the CLI."""
    import subprocess
    import sys

    import diffcompose as dc

    bg = testdata / "composition/AnyDoor/examples/TestDreamBooth/BG/000000047948_GT.png"
    mask = testdata / "composition/AnyDoor/examples/TestDreamBooth/BG/000000047948_mask.png"
    fg = testdata / "composition/AnyDoor/examples/TestDreamBooth/FG/01.png"
    out = dc.insert(bg, mask, fg, engine="anydoor", model="tiny", steps=2, seed=3)
    from PIL import Image

    assert out.size == Image.open(bg).size
    target = tmp_path / "out.png"
    cmd = [sys.executable, "-m", "diffcompose", "insert", str(bg), "--mask", str(mask), "--reference", str(fg),
           "-o", str(target), "--engine", "anydoor", "--model", "tiny", "--steps", "2", "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as this module: the same float sums
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    assert np.array_equal(np.asarray(Image.open(target).convert("RGB")), np.asarray(out))


def test_options_reach_the_model(engine):
    """Shape control, control strength and the batch each change what is sampled (same seed, fixed ratios)."""
    image, mask, _, _ = _scene()
    fixed = {"seed": 2, "steps": 1, "box_ratio": 1.1, "crop_ratio": 2.0}
    base = _insert(engine, **fixed)
    shape = np.zeros_like(mask)
    shape[100:140, 130:190] = True  # inside the target box
    assert not np.array_equal(base, _insert(engine, shape_mask=shape, **fixed))
    assert not np.array_equal(base, _insert(engine, control_strength=0.0, **fixed))
    image, mask, ref, ref_mask = _scene()
    two = engine.insert(image, mask, ref, reference_mask=ref_mask, num_images=2, **fixed)
    assert len(two) == 2 and not np.array_equal(np.asarray(two[0]), np.asarray(two[1]))
