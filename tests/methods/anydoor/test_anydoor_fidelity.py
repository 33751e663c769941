"""AnyDoor against the public code's facts: what actually reaches the model, paste-back, timesteps, training data.

Each test here pins one part that a sabotage could remove while every other test stays green
(``benchmarks/mutations.py`` lists the sabotages and the test that catches each):

* the engine's conditional and unconditional inputs (ID tokens, hint) on a real photo equal
  what the preprocessing and the ID extractor give: tokens of the reference for the
  conditional half, of an all-zeros image for the unconditional half, the high-frequency
  collage in the hint of both (the public ``process_pairs`` and ``un_cond``);
* the trainer's hint is built from the *augmented* reference (the public ``base.py`` takes
  ``sobel`` of the flipped / recoloured reference);
* paste-back: the whole expanded box, nothing outside it (the demo's "keep background unchanged");
* the public DDIM timesteps for 10..60 steps (``make_ddim_timesteps``, ``uniform``);
* shape masks at the mask's own pixels (the public ``perturb_mask``), per-source data rules.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffcompose.methods.anydoor import data as D  # noqa: E402
from diffcompose.methods.anydoor import model as M  # noqa: E402
from diffcompose.methods.anydoor import preprocess as P  # noqa: E402
from diffcompose.methods.anydoor.tiny import build_tiny_anydoor  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

FIXED = {"reference_ratio": 1.2, "box_ratio": 1.1, "crop_ratio": 2.0}


@pytest.fixture(scope="module")
def engine():
    from diffcompose.methods.anydoor.engine import AnyDoorEngine

    return AnyDoorEngine.from_model(build_tiny_anydoor(seed=11).eval())


def _scene():
    """scikit-image's astronaut (odd size) with a sail-shaped target (a triangle: most of its box is
    outside it) and the cat photo with an ellipse around its face as the reference object."""
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[10:231, 30:327])
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    mask = (yy >= 80) & (yy < 160) & (xx >= 120) & (xx - 120 <= (yy - 80))  # a right triangle
    ref = data.chelsea()
    ry, rx = np.mgrid[:ref.shape[0], :ref.shape[1]]
    ref_mask = ((rx - 220) / 130.0) ** 2 + ((ry - 150) / 110.0) ** 2 <= 1.0
    return image, mask, ref, ref_mask


# ----------------------------------------------------------------------------- item 1: what the model gets

class _Spy:
    """Records the keyword inputs of every forward call of a module (hooks, so nothing is replaced)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls: list[dict] = []
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.calls.append({"args": [a.detach().clone() if torch.is_tensor(a) else a for a in args],
                           **{k: v.detach().clone() for k, v in kwargs.items() if torch.is_tensor(v)}})

    def remove(self) -> None:
        self.handle.remove()


def test_engine_conditions_on_reference_tokens_zero_image_tokens_and_the_hf_collage(engine):
    """On a real photo: the ControlNet and the UNet get ``[uncond, cond]`` ID tokens where cond is the
    extractor on the prepared reference and uncond the extractor on an all-zeros 224 image; the
    ControlNet's hint is, in both halves, the hint built with the reference's high-frequency map."""
    image, mask, ref, ref_mask = _scene()
    cn, un = _Spy(engine.m.controlnet), _Spy(engine.m.unet)
    try:
        engine.insert(image, mask, ref, reference_mask=ref_mask, steps=1, guidance_scale=5.0, seed=3, **FIXED)
    finally:
        cn.remove()
        un.remove()
    prepared = P.prepare_reference(ref, ref_mask, ratio=FIXED["reference_ratio"])
    ext = engine.m.id_extractor
    with torch.no_grad():
        cond = ext(M.reference_to_tensor(prepared.image))
        uncond = ext(torch.zeros(1, 3, P.REFERENCE_SIZE, P.REFERENCE_SIZE))
    hint = P.build_hint(image, mask, prepared.hf_map, box_ratio=FIXED["box_ratio"], crop_ratio=FIXED["crop_ratio"],
                        size=engine.native_size()).hint
    hint_t = torch.from_numpy(hint).permute(2, 0, 1)[None]
    # the checks would be vacuous if these coincided
    assert not torch.allclose(cond, uncond, atol=1e-3) and cond.abs().max() > 1e-3
    raw_hint = P.build_hint(image, mask, prepared.image, box_ratio=FIXED["box_ratio"],
                            crop_ratio=FIXED["crop_ratio"], size=engine.native_size()).hint
    assert not np.allclose(raw_hint, hint)
    assert len(cn.calls) == len(un.calls) == 1
    for call in (cn.calls[0], un.calls[0]):
        tokens = call["encoder_hidden_states"]
        assert tokens.shape[0] == 2
        torch.testing.assert_close(tokens[1:], cond, atol=1e-5, rtol=1e-5)   # conditional half: the reference
        torch.testing.assert_close(tokens[:1], uncond, atol=1e-5, rtol=1e-5)  # unconditional half: zeros image
    given = cn.calls[0]["controlnet_cond"]
    assert given.shape[0] == 2
    for half in given:
        torch.testing.assert_close(half[None], hint_t, atol=0, rtol=0)


def test_trainer_builds_the_hint_from_the_augmented_reference(monkeypatch):
    """Through the trainer's loss on the tiny model: the hint the model gets is the one built from the
    high-frequency map of the *augmented* reference (and mask), and the reference it gets is that
    augmented reference (the public ``base.py``: ``sobel(aug_image, aug_mask / 255)``)."""
    from skimage import data

    from diffcompose.methods.anydoor import train as T

    photo = cv2.resize(data.astronaut(), (160, 160), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[:160, :160]
    mask = ((xx - 80) / 30.0) ** 2 + ((yy - 70) / 45.0) ** 2 <= 1.0
    augmented, hf_inputs = [], []
    real_aug, real_hint = D.augment_reference, P.build_hint

    def spy_aug(image, m, rng):
        out = real_aug(image, m, rng)
        augmented.append((image, out))
        return out

    def spy_hint(scene, target_mask, hf_map, **kw):
        out = real_hint(scene, target_mask, hf_map, **kw)
        hf_inputs.append((hf_map, out.hint))
        return out

    model = build_tiny_anydoor(seed=5).eval()
    seen = []
    hook = model.register_forward_pre_hook(lambda mod, args: seen.append((args[2].clone(), args[3].clone())))
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(model.scheduler_config)
    changed = 0
    monkeypatch.setattr(D, "augment_reference", spy_aug)
    monkeypatch.setattr(P, "build_hint", spy_hint)
    try:
        for seed in range(6):
            augmented.clear(), hf_inputs.clear(), seen.clear()
            ref, target, hint, _ = D.process_pair(photo, mask, photo, mask, np.random.default_rng(seed),
                                                  resolution=64, shape_p=0.0)
            (before, (aug_img, aug_mask)), (hf_map, built) = augmented[0], hf_inputs[0]
            changed += not np.array_equal(before, aug_img)
            np.testing.assert_array_equal(hf_map, P.high_frequency_map(aug_img, aug_mask / 255.0))
            batch = {"image": torch.from_numpy(target).permute(2, 0, 1)[None].float() / 127.5 - 1,
                     "hint": torch.from_numpy(np.ascontiguousarray(hint)).permute(2, 0, 1)[None],
                     "reference": torch.from_numpy(ref).permute(2, 0, 1)[None].float() / 255,
                     "timestep": torch.tensor([10])}
            with torch.no_grad():
                T.loss_fn(T.AnyDoorTrainModel(model), model.vae, sched, batch, torch.Generator().manual_seed(0),
                          torch.float32)
            hint_seen, _ = seen[0]
            torch.testing.assert_close(hint_seen[0], torch.from_numpy(built).permute(2, 0, 1), atol=0, rtol=0)
            np.testing.assert_array_equal(ref, aug_img)
    finally:
        hook.remove()
    assert changed >= 3  # the augmentation did change the reference in most draws (else this proves nothing)


# ----------------------------------------------------------------------------- item 5: paste-back

def _box_mask(mask: np.ndarray) -> np.ndarray:
    y1, y2, x1, x2 = P.target_box(mask, FIXED["box_ratio"], mask.shape)
    box = np.zeros(mask.shape, bool)
    box[y1:y2, x1:x2] = True
    return box


def test_default_paste_back_is_the_whole_expanded_box_and_nothing_outside(engine):
    """The demo's rule: inside the expanded target box every pixel is the result's (the sail's box
    is mostly outside the sail), outside it every pixel is the original (no seam)."""
    image, mask, ref, ref_mask = _scene()
    kw = {"reference_mask": ref_mask, "steps": 1, "seed": 2, **FIXED}
    out = np.asarray(engine.insert(image, mask, ref, **kw))
    raw = np.asarray(engine.insert(image, mask, ref, paste_back=False, **kw))
    box = _box_mask(mask)
    assert (box & ~mask).sum() > 0.4 * box.sum()
    np.testing.assert_array_equal(out[~box], image[~box])
    np.testing.assert_array_equal(out[box], raw[box])
    assert not np.array_equal(out[box & ~mask], image[box & ~mask])


def test_mask_paste_rule_keeps_the_project_rule(engine):
    """``paste_rule="mask"``: the original comes back inside the box too, away from the grown region."""
    from diffcompose.inputs import dilate_mask
    from diffcompose.regions import default_margin

    image, mask, ref, ref_mask = _scene()
    out = np.asarray(engine.insert(image, mask, ref, reference_mask=ref_mask, steps=1, seed=2, paste_rule="mask",
                                   **FIXED))
    opts = engine.options("insert", {"paste_rule": "mask", **FIXED})
    grown = dilate_mask(mask, engine.paste_band("insert", opts, mask) + default_margin(image.shape))
    far = _box_mask(mask) & ~grown
    assert far.sum() > 500
    np.testing.assert_array_equal(out[far], image[far])


# ----------------------------------------------------------------------------- item 7: timesteps

def _public_schedule(steps: int, train: int = 1000) -> list[int]:
    """``make_ddim_timesteps('uniform', steps, 1000) + 1``, sampled from the last."""
    c = train // steps
    return [t + 1 for t in range(0, train, c)][::-1]


@pytest.mark.parametrize("steps", range(10, 61))
def test_ddim_timesteps_and_previous_alphas_are_the_public_ones(steps):
    """Every step count 10..60: the timesteps, and each step's update uses the public previous
    alpha (the previous DDIM timestep's; ``alphas_cumprod[0]`` after the last)."""
    from diffcompose.methods.anydoor.engine import public_ddim
    from diffcompose.models.tiny import tiny_scheduler_config

    want = _public_schedule(steps)
    if want[0] >= 1000:  # 27, 36, 37: the public sampler indexes alphas_cumprod[1000] and fails
        from diffcompose.errors import InputError

        with pytest.raises(InputError, match=r"no \d+-step form.*--steps \d+"):
            public_ddim(tiny_scheduler_config(), steps)
        return
    sched = public_ddim(tiny_scheduler_config(), steps)
    assert [int(t) for t in sched.timesteps] == want
    acp = sched.alphas_cumprod.double()
    x = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    eps = torch.full_like(x, 0.5)
    for i in (0, len(want) // 2, len(want) - 1):
        t = want[i]
        prev = acp[want[i + 1]] if i + 1 < len(want) else acp[0]
        x0 = (x - (1 - acp[t]).sqrt() * eps) / acp[t].sqrt()
        expected = prev.sqrt() * x0 + (1 - prev).sqrt() * eps
        got = sched.step(eps.float(), torch.tensor(t), x.float(), eta=0.0).prev_sample.double()
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_engine_samples_at_the_public_timesteps(engine):
    """15 steps (1000 // 15 = 66): the public sampler runs 16, from 991; the model sees exactly those."""
    image, mask, ref, ref_mask = _scene()
    seen = []
    hook = engine.m.unet.register_forward_pre_hook(lambda mod, args: seen.append(int(args[1])))
    try:
        engine.insert(image, mask, ref, reference_mask=ref_mask, steps=15, guidance_scale=1.0, seed=0, **FIXED)
    finally:
        hook.remove()
    assert seen == _public_schedule(15)


# ----------------------------------------------------------------------------- item 8: training data

def _public_perturb(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The public ``perturb_mask`` at the mask's own pixels, with the draws in its order taken from ``rng``."""
    def structure(size):
        k = int(rng.integers(4))
        if k == 0:
            return cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, [(size, size), (size, size // 2), (size // 2, size)][k - 1])

    target = rng.uniform(0.3, 0.99)
    h, w = gt.shape
    gt = gt.astype(np.uint8)
    seg = gt.copy()
    for _ in range(250):
        for _ in range(4):
            lx, ly = int(rng.integers(w)), int(rng.integers(h))
            lw, lh = int(rng.integers(lx + 1, w + 1)), int(rng.integers(ly + 1, h + 1))
            if rng.random() < 0.1:
                seg[(ly + lh) // 2, (lx + lw) // 2] = int(rng.integers(2))
            op = cv2.dilate if rng.random() < 0.5 else cv2.erode
            seg[ly:lh, lx:lw] = op(np.ascontiguousarray(seg[ly:lh, lx:lw]), structure(int(rng.integers(3, 10))))
            seg = (seg | gt).astype(np.uint8)
        if np.count_nonzero(seg & gt) / np.count_nonzero(seg | gt) < target:
            break
    _, labels, stats, _ = cv2.connectedComponentsWithStats(seg, connectivity=8)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def test_shape_masks_are_perturbed_at_the_masks_own_pixels():
    """A 200 x 150 object crop: the shape mask equals the public perturbation run on it as it is (no
    downsampling), for several seeds."""
    yy, xx = np.mgrid[:200, :150]
    gt = (((xx - 70) / 40.0) ** 2 + ((yy - 100) / 70.0) ** 2 <= 1.0) | ((yy > 150) & (abs(xx - 70) < 6))
    for seed in range(4):
        ours = D.shape_mask(gt, np.random.default_rng(seed))
        np.testing.assert_array_equal(ours, _public_perturb(gt, np.random.default_rng(seed)))


def _write(folder, name, image, mask):
    from PIL import Image

    Image.fromarray(image).save(folder / f"{name}.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{name}_m.png")
    return {"image": f"{name}.png", "mask": f"{name}_m.png"}


def test_manifest_rules_of_mose_vipseg_and_try_on(tmp_path):
    """Per source, as the public ``datasets/*.py``: MOSE timesteps [0, 1000), gap len // 10, a box fails on
    either side; VIPSeg [500, 1000), len // 100, either side; try-on pairs [0, 1000), both sides, target box up
    to the whole image; line fields override a preset."""
    img = np.zeros((40, 40, 3), np.uint8)
    m = np.zeros((40, 40), bool)
    m[10:30, 10:30] = True
    frames = [_write(tmp_path, f"f{i}", img, m) for i in range(3)]
    lines = [{"preset": "mose", "frames": frames}, {"preset": "vipseg", "frames": frames},
             {"preset": "vitonhd", "frames": frames[:2]}, {"kind": "video", "frames": frames},
             {"preset": "mose", "frames": frames, "timesteps": [100, 200], "gap": 3, "size_rule": "both"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    mose, vipseg, tryon, video, custom = D.read_sources(tmp_path / "m.jsonl")
    assert (mose.kind, mose.rule) == ("video", D.Rules((0, 1000), 10, "either", 0.8))
    assert (vipseg.kind, vipseg.rule) == ("video", D.Rules((500, 1000), 100, "either", 0.8))
    assert (tryon.kind, tryon.rule) == ("pair", D.Rules((0, 1000), 1, "both", 1.0))
    assert video.rule == D.Rules((500, 1000), 10, "both", 0.8)
    assert custom.rule == D.Rules((100, 200), 3, "both", 0.8)
    rng = np.random.default_rng(0)
    ts = [D.sample_timestep(rng, mose.rule.timesteps, 0.0) for _ in range(3000)]
    assert min(ts) < 50 and max(ts) > 950  # MOSE: [0, 1000), not the video default [500, 1000)
    ts = [D.sample_timestep(rng, vipseg.rule.timesteps, 0.0) for _ in range(500)]
    assert min(ts) >= 500
    gaps = [j - i for i, j in (D.pick_pair(300, "video", rng, vipseg.rule.gap) for _ in range(500))]
    assert min(gaps) >= 3 and min(gaps) < 30  # len // 100 = 3, not len // 10 = 30
    assert {D.pick_pair(4, "pair", rng) for _ in range(200)} == {(0, 1), (0, 2), (0, 3)}
    # the size rule: a target box 0.9 of the image tall but narrow fails MOSE's (either side), passes a
    # both-sides rule; try-on allows a box as large as the image
    tall = np.zeros((100, 100), bool)
    tall[3:88, 40:60] = True
    ref = np.zeros((100, 100), bool)
    ref[30:70, 30:70] = True
    photo = np.full((100, 100, 3), 128, np.uint8)
    with pytest.raises(D.Rejected, match="too large"):
        D.process_pair(photo, ref, photo, tall, np.random.default_rng(1), kind="video", resolution=64, rules=mose.rule)
    D.process_pair(photo, ref, photo, tall, np.random.default_rng(1), kind="video", resolution=64, rules=video.rule)
    for line, words in (({"preset": "nope", "frames": frames}, "preset"),
                        ({"kind": "video", "frames": frames, "timesteps": [5, 5]}, "timesteps"),
                        ({"kind": "video", "frames": frames, "gap": 0}, "gap"),
                        ({"kind": "video", "frames": frames, "size_rule": "any"}, "size_rule"),
                        ({"kind": "pair", "frames": frames[:1]}, "at least 2")):
        (tmp_path / "bad.jsonl").write_text(json.dumps(line) + "\n")
        from diffcompose.errors import InputError

        with pytest.raises(InputError, match=words):
            D.read_sources(tmp_path / "bad.jsonl")


def test_the_dataset_applies_each_sources_rules(tmp_path):
    """Through :class:`AnyDoorDataset`: a MOSE source draws timesteps over [0, 1000) (a plain video source
    only [500, 1000)), a try-on pair always takes its first frame as the reference and another as the target."""
    from skimage import data

    photo = cv2.resize(data.astronaut(), (48, 48), interpolation=cv2.INTER_AREA)
    m = np.zeros((48, 48), bool)
    m[12:36, 14:34] = True
    frames = [_write(tmp_path, f"f{i}", photo, m) for i in range(4)]
    lines = [{"preset": "mose", "frames": frames}, {"kind": "video", "frames": frames},
             {"preset": "fashiontryon", "frames": frames}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    mose, video, tryon = D.read_sources(tmp_path / "m.jsonl")

    def draws(src, n=60):
        ds = D.AnyDoorDataset([src], resolution=32, seed=1, uniform_t_p=0.0, shape_p=0.0)
        return [ds.sample(k) for k in range(n)]

    assert min(s.timestep for s in draws(mose)) < 400
    assert min(s.timestep for s in draws(video)) >= 500
    pairs = {s.pair for s in draws(tryon, 30)}
    assert {i for i, _ in pairs} == {0} and {j for _, j in pairs} <= {1, 2, 3} and len(pairs) > 1

# ----------------------------------------------------------------------------- item 6: input reading

def _cutout():
    """The cat photo as a cut-out: RGBA with a soft (blurred) alpha edge, as matting tools write them."""
    from skimage import data

    rgb = data.chelsea()
    ry, rx = np.mgrid[:rgb.shape[0], :rgb.shape[1]]
    hard = (((rx - 220) / 130.0) ** 2 + ((ry - 150) / 110.0) ** 2 <= 1.0).astype(np.float32)
    alpha = np.clip(np.rint(cv2.GaussianBlur(hard, (0, 0), 6) * 255), 0, 255).astype(np.uint8)
    return rgb, alpha


def _project_rgb(rgba: np.ndarray) -> np.ndarray:
    """The project's reading of an RGBA image (transparency put on white)."""
    from diffcompose.inputs import load_image

    return load_image(rgba)


def test_masks_are_read_above_128_and_a_transparent_reference_as_stored(engine):
    """The public reading: a mask level of exactly 128 is not the object (``> 128``); an RGBA reference
    is its colour as stored, cut by ``alpha > 128`` (not the colour put on white, not ``alpha >= 128``).
    Checked on what reaches the model: the conditional tokens and the hint."""
    image, mask, _, _ = _scene()
    levels = np.where(mask, 255, 0).astype(np.uint8)
    levels[150:200, 60:250] = 128  # a wide band at exactly 128: it would move the target box
    rgb, alpha = _cutout()
    rgba = np.dstack([rgb, alpha])
    assert ((alpha == 128).sum() > 0) and (((alpha > 0) & (alpha < 255)).sum() > 1000)
    cn, un = _Spy(engine.m.controlnet), _Spy(engine.m.unet)
    try:
        engine.insert(image, levels, rgba, steps=1, guidance_scale=5.0, seed=3, **FIXED)
    finally:
        cn.remove()
        un.remove()
    public = P.prepare_reference(rgb, alpha > 128, ratio=FIXED["reference_ratio"])
    project = P.prepare_reference(_project_rgb(rgba), alpha >= 128, ratio=FIXED["reference_ratio"])
    assert not np.array_equal(public.image, project.image)
    with torch.no_grad():
        cond = engine.m.id_extractor(M.reference_to_tensor(public.image))
    torch.testing.assert_close(un.calls[0]["encoder_hidden_states"][1:], cond, atol=1e-5, rtol=1e-5)
    hint = P.build_hint(image, levels > 128, public.hf_map, box_ratio=FIXED["box_ratio"],
                        crop_ratio=FIXED["crop_ratio"], size=engine.native_size()).hint
    wider = P.build_hint(image, levels >= 128, public.hf_map, box_ratio=FIXED["box_ratio"],
                         crop_ratio=FIXED["crop_ratio"], size=engine.native_size()).hint
    assert not np.array_equal(hint, wider)
    torch.testing.assert_close(cn.calls[0]["controlnet_cond"][1], torch.from_numpy(hint).permute(2, 0, 1),
                               atol=0, rtol=0)


def test_a_mask_at_128_only_is_refused_by_anydoor(engine):
    from diffcompose.errors import InputError

    image, mask, ref, ref_mask = _scene()
    with pytest.raises(InputError, match="above 128"):
        engine.insert(image, np.where(mask, 128, 0).astype(np.uint8), ref, reference_mask=ref_mask, steps=1)


def test_the_public_examples_are_read_as_the_public_scripts_read_them(engine, testdata):
    """AnyDoor's own RGBA references and scene masks (``examples/TestDreamBooth``): after the engine's
    reading the reference is the file's colour as stored, its mask ``alpha > 128``, the target mask
    ``channel 0 > 128`` (``run_inference.py``'s single-image example, with cv2's BGR turned to RGB)."""
    from PIL import Image

    from diffcompose.methods.tasks import prepare

    root = testdata / "composition/AnyDoor/examples/TestDreamBooth"
    scene, mask_path = root / "BG/000000047948_GT.png", root / "BG/000000047948_mask.png"
    moved = 0
    for fg in sorted((root / "FG").glob("*.png")):
        job = engine.read(prepare("insert", {"image": scene, "mask": mask_path, "reference": fg}))
        rgba = np.asarray(Image.open(fg).convert("RGBA"))
        np.testing.assert_array_equal(job.arrays["reference"], rgba[..., :3])
        np.testing.assert_array_equal(job.arrays["reference_mask"], rgba[..., 3] > 128)
        public_mask = np.asarray(Image.open(mask_path).convert("RGB"))[..., 2] > 128  # cv2 channel 0 = blue
        np.testing.assert_array_equal(job.arrays["mask"], public_mask)
        np.testing.assert_array_equal(job.paste_mask, public_mask)
        moved += not np.array_equal(job.arrays["reference_mask"], rgba[..., 3] >= 128)
    assert moved > 0  # some of the examples have alpha exactly 128: the two readings differ there
