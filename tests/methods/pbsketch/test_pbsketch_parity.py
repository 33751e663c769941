"""Paint-by-Sketch against the public computation (``kangyeolk/Paint-by-Sketch``) on tiny random weights.

Written out here, independently of the engine, from the public code (facts only):

* the demo's input preparation (``demo/app.py``: ``paint_with_sketch`` and ``get_input_sketch`` with the
  published ``input_edge_type: only_mask_region``): the sketch read as RGB into [-1, 1], kept inside
  the hole, ``2 * (sketch01 * (1 - keep)) - 1``, resized to the latent grid by torchvision's tensor
  ``Resize`` (bilinear, no antialiasing in the pinned torchvision 0.12);
* its PLMS sampler (``ldm/models/diffusion/plms.py``): the 12 channels ``[x, z_inpaint, keep, sketch]``,
  ``_sketch_inject_strategy`` zeroing the sketch channels once ``index < steps - int(steps * share)``
  (in place, so the first step's second evaluation sees that step's sketch), the pseudo improved Euler
  first step and Adams-Bashforth after it, classifier-free guidance on ``learnable_vector``.

When the mirror of the public repository is present, its own ``plms.py`` is also run (loaded at test
time, nothing of it is stored here); otherwise that test skips.
"""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import mirror

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import torch.nn.functional as F  # noqa: E402

from diffcompose.methods.pbe.reference import prepare_reference  # noqa: E402
from diffcompose.methods.pbsketch.engine import PaintBySketchEngine, sketch_latent  # noqa: E402
from diffcompose.methods.pbsketch.sketch import sketch_pixels, sketch_shown  # noqa: E402
from diffcompose.methods.pbsketch.tiny import write_tiny_pbsketch  # noqa: E402

SIZE = 64  # pixels; latent 8x8
MIRROR = mirror("kangyeolk/Paint-by-Sketch")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = write_tiny_pbsketch(tmp_path_factory.mktemp("pbsketch") / "tiny", seed=4)
    return PaintBySketchEngine(device="cpu", model=str(root)).load()


@pytest.fixture(scope="module")
def case():
    """A 64x64 scene, its hole, a 32x32 reference (the tiny encoder's size: no resize) and a sketch."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    hole = np.zeros((SIZE, SIZE), dtype=bool)
    hole[12:52, 16:56] = True
    reference = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    sketch = np.zeros((SIZE, SIZE), dtype=np.uint8)
    # strokes 8 px wide: the public latent resize (bilinear, no antialiasing) samples every 8th pixel
    # pair, so a thinner stroke can fall between the samples and vanish, in its code as in ours
    sketch[16:48, 28:36] = 255
    sketch[28:36, 20:50] = 255
    sketch[2:6, :] = 255  # a stroke outside the hole: the public input drops it
    return image, hole, reference, sketch


# ----------------------------------------------------------------------------- the public computation

def public_inputs(image: np.ndarray, hole: np.ndarray, sketch: np.ndarray):
    """``paint_with_sketch``'s tensors: image in [-1, 1], binarised keep mask, masked sketch (pixel size)."""
    to_tensor = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0).permute(2, 0, 1)[None]  # noqa: E731
    image_t = (to_tensor(image) - 0.5) / 0.5
    keep = 1 - (hole.astype(np.uint8) * 255)[None, None].astype(np.float32) / 255.0
    keep[keep < 0.5] = 0
    keep[keep >= 0.5] = 1
    keep_t = torch.from_numpy(keep)
    sketch_t = (to_tensor(np.repeat(sketch[..., None], 3, axis=2)) - 0.5) / 0.5  # the sketch read as RGB
    in_sketch = ((sketch_t + 1) / 2) * (1 - keep_t)
    return image_t, keep_t, 2 * in_sketch - 1


def public_resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """torchvision 0.12's ``Resize([side, side])`` of a float tensor: bilinear, no antialiasing."""
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


def alphas(steps: int):
    """The PLMS sampler's ``ddim_alphas`` / ``ddim_alphas_prev`` (uniform timesteps + 1, SD1's betas)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    cum = torch.cumprod(1 - betas, 0).numpy()
    ts = np.asarray(list(range(0, 1000, 1000 // steps))) + 1
    return ts, torch.tensor(cum[ts], dtype=torch.float32), torch.tensor(
        np.asarray([cum[0]] + cum[ts[:-1]].tolist()), dtype=torch.float32)


def public_plms(unet, cond, uncond, x, z_inpaint, keep, sketch, steps: int, scale: float, share: float):
    """``PLMSSampler.plms_sampling`` + ``p_sample_plms`` with the sketch injection, eta 0."""
    ts, a, a_prev = alphas(steps)
    sketch = sketch.clone()
    old_eps: list[torch.Tensor] = []
    time_range = np.flip(ts)

    def eps(x_new, t):
        e_u, e_c = unet(torch.cat([x_new] * 2), torch.tensor([t] * 2), encoder_hidden_states=torch.cat(
            [uncond, cond])).sample.chunk(2)
        return e_u + scale * (e_c - e_u)

    def step(x, e, index):
        pred_x0 = (x - (1 - a[index]).sqrt() * e) / a[index].sqrt()
        return a_prev[index].sqrt() * pred_x0 + (1 - a_prev[index]).sqrt() * e

    for i, t in enumerate(time_range):
        index = steps - i - 1
        if index < steps - int(steps * share):
            sketch[:, ...] = 0  # in place, as the public code
        e_t = eps(torch.cat([x, z_inpaint, keep, sketch], 1), int(t))
        if not old_eps:
            x_prev = step(x, e_t, index)
            t_next = int(time_range[min(i + 1, len(time_range) - 1)])
            e_prime = (e_t + eps(torch.cat([x_prev, z_inpaint, keep, sketch], 1), t_next)) / 2
        elif len(old_eps) == 1:
            e_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x = step(x, e_prime, index)
        old_eps = (old_eps + [e_t])[-3:]
    return x


def public_run(c, case, *, steps: int, scale: float, share: float, seed: int, sampler=public_plms) -> np.ndarray:
    """The whole public inference on our tiny modules; random draws in the engine's order (start noise, then
    the masked image's posterior sample), handed over as tensors."""
    image, hole, reference, sketch = case
    image_t, keep, in_sketch = public_inputs(image, hole, sketch)
    gen = torch.Generator().manual_seed(seed)
    side = SIZE // 8
    x_t = torch.randn((1, 4, side, side), generator=gen)
    scale_factor = c.vae.config.scaling_factor
    with torch.no_grad():
        z_inpaint = c.vae.encode(image_t * keep).latent_dist.sample(generator=gen) * scale_factor
        ref = torch.from_numpy(prepare_reference(reference, None, size=32))[None]
        cond, uncond = c.encoder(ref), c.encoder.uncond_vector
        x = sampler(c.unet, cond, uncond, x_t, z_inpaint, public_resize(keep, side), public_resize(in_sketch, side),
                    steps, scale, share)
        out = c.vae.decode(x / scale_factor).sample
    return (torch.clamp((out + 1.0) / 2.0, 0, 1)[0].permute(1, 2, 0).numpy() * 255)


def ours(engine, case, **options) -> np.ndarray:
    image, hole, reference, sketch = case
    out = engine.paint(image, hole, reference, sketch=sketch, paste_back=False, crop=False, resolution=SIZE,
                       scheduler="plms", **options)
    return np.asarray(out).astype(np.float64)


# ----------------------------------------------------------------------------- the deterministic steps

def test_sketch_channels_are_the_public_input(case) -> None:
    """Inside the hole the strokes (+1) on -1, outside it -1; three equal channels; then the latent resize."""
    image, hole, _, sketch = case
    _, _, expected = public_inputs(image, hole, sketch)
    mine = sketch_pixels(sketch.astype(np.float32) / 255.0, hole)
    np.testing.assert_array_equal(mine, expected[0].numpy())
    assert mine[:, 4, 20].tolist() == [-1.0] * 3 and mine[:, 32, 30].tolist() == [1.0] * 3
    np.testing.assert_array_equal(sketch_latent(mine, (8, 8)).numpy(), public_resize(expected, 8).numpy())


def test_sketch_channels_reach_the_unet_after_the_nine(engine, case) -> None:
    """The UNet's input is ``[z_t, z_masked, keep, sketch]``: its last three channels are the sketch's latent."""
    seen: list[torch.Tensor] = []
    hook = engine.c.unet.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    try:
        ours(engine, case, steps=2, guidance_scale=1.0, seed=0)
    finally:
        hook.remove()
    image, hole, _, sketch = case
    _, _, expected = public_inputs(image, hole, sketch)
    assert seen[0].shape[1] == 12
    torch.testing.assert_close(seen[0][:, 9:], public_resize(expected, 8), rtol=0, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 4, 5, 50])
@pytest.mark.parametrize("share", [0.0, 0.2, 0.25, 0.5, 0.99, 1.0])
def test_the_sketch_is_shown_at_the_public_steps(steps, share) -> None:
    """Which model evaluations see the sketch, against the public loop (PLMS: one more evaluation at first)."""
    public = []
    zeroed = False
    for i in range(steps):
        index = steps - i - 1
        zeroed = zeroed or index < steps - int(steps * share)
        public.append(not zeroed)
        if i == 0:
            public.append(not zeroed)  # the first step's second evaluation: same (possibly zeroed) tensor
    calls = steps + 1
    assert [sketch_shown(k, steps, calls, share) for k in range(calls)] == public
    assert [sketch_shown(k, steps, steps, share) for k in range(steps)] == public[1:]  # one evaluation per step


# ----------------------------------------------------------------------------- a short denoising run

@pytest.mark.parametrize("share", [1.0, 0.5])
def test_a_denoising_run_matches_the_written_out_public_sampler(engine, case, share) -> None:
    expected = public_run(engine.c, case, steps=4, scale=5.0, share=share, seed=7)
    got = ours(engine, case, steps=4, guidance_scale=5.0, sketch_steps=share, seed=7)
    assert np.abs(got - expected).max() <= 1.0


def test_the_sketch_and_its_steps_change_the_result(engine, case) -> None:
    """Guards against a run that matches only because the sketch does nothing on these weights."""
    full = ours(engine, case, steps=4, guidance_scale=5.0, seed=7)
    assert np.abs(full - ours(engine, case, steps=4, guidance_scale=5.0, seed=7, sketch_steps=0.5)).max() > 2
    image, hole, reference, _ = case
    none = engine.paint(image, hole, reference, paste_back=False, crop=False, resolution=SIZE, steps=4, seed=7)
    assert np.abs(full - np.asarray(none)).max() > 2


# ----------------------------------------------------------------------------- the public code itself

def load_public_plms():
    """The mirror's ``ldm/models/diffusion/plms.py`` and its helpers, patched in memory for a CPU run."""
    if not (MIRROR / "HEAD").exists() and not (MIRROR / ".git").exists():
        pytest.skip(f"the public Paint-by-Sketch mirror is not here ({MIRROR})")

    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:{path}"], capture_output=True, text=True,
                              check=True).stdout

    util = types.ModuleType("ldm.modules.diffusionmodules.util")
    util_src = show("ldm/modules/diffusionmodules/util.py").replace("from einops import repeat", "repeat = None")
    util_src = util_src.replace("from ldm.util import instantiate_from_config", "instantiate_from_config = None")
    exec(compile(util_src, "util.py", "exec"), util.__dict__)
    saved = {k: sys.modules.get(k) for k in ("ldm", "ldm.modules", "ldm.modules.diffusionmodules",
                                              "ldm.modules.diffusionmodules.util")}
    try:
        for k in saved:
            sys.modules[k] = util if k.endswith("util") else types.ModuleType(k)
        plms = types.ModuleType("plms")
        src = show("ldm/models/diffusion/plms.py").replace('attr = attr.to(torch.device("cuda"))', "pass")
        exec(compile(src, "plms.py", "exec"), plms.__dict__)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return plms.PLMSSampler


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 about the public code's arrays
def test_a_denoising_run_matches_the_public_plms_sampler(engine, case) -> None:
    sampler_cls = load_public_plms()
    share = 0.5

    class Model:  # what PLMSSampler reads of LatentDiffusion
        num_timesteps = 1000
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        device = torch.device("cpu")

        def __init__(self, unet):
            self.unet = unet

        def apply_model(self, x, t, c):
            return self.unet(x, t, encoder_hidden_states=c).sample

    def sample(unet, cond, uncond, x, z_inpaint, keep, sketch, steps, scale, share):
        sampler = sampler_cls(Model(unet))
        kwargs = {"inpaint_image": z_inpaint, "inpaint_mask": keep, "in_sketch": sketch,
                  "sketch_config": {"not_use_sketch_after": share}}
        out, _ = sampler.sample(S=steps, conditioning=cond, batch_size=1, shape=[4, 8, 8], verbose=False,
                                unconditional_guidance_scale=scale, unconditional_conditioning=uncond, eta=0.0,
                                x_T=x, test_model_kwargs=kwargs)
        return out

    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its prints, tqdm
        expected = public_run(engine.c, case, steps=4, scale=5.0, share=share, seed=7, sampler=sample)
    got = ours(engine, case, steps=4, guidance_scale=5.0, sketch_steps=share, seed=7)
    assert np.abs(got - expected).max() <= 1.0
