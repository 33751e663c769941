"""The papers' metrics: each pinned against an independent computation, on tiny random models.

The learned metrics' scores with random weights mean nothing; what is pinned is the
arithmetic around them (Fréchet distance, the LPIPS sum, cosine scores), the FID network's
architecture and key names (so the published weights load), and the one-line failures.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffcompose.errors import WeightsMissingError
from diffcompose.evaluation import fmse, mse, psnr
from diffcompose.evaluation.fid import (FIDInceptionV3, find_weights, frechet_distance, gaussian_stats,
                                        inception_features, load_inception, load_state)
from diffcompose.evaluation.lpips import LPIPS, lpips_from_features


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _direct_fd(mu1, s1, mu2, s2) -> float:
    """Tr sqrtm(S1 S2) = Tr sqrtm(S1^1/2 S2 S1^1/2): symmetric, so eigh suffices (no scipy.sqrtm)."""
    r1 = _sqrtm_psd(s1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(_sqrtm_psd(r1 @ s2 @ r1)))


def _random_cov(rng, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_of_known_gaussians_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = _random_cov(rng, 6), _random_cov(rng, 6)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_direct_fd(mu1, s1, mu2, s2), rel=1e-9)
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    assert frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b)) == pytest.approx(3 + 1 + 1)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)


def test_fid_of_sampled_features_estimates_the_distance_of_their_gaussians() -> None:
    rng = np.random.default_rng(1)
    mu1, mu2 = np.zeros(4), np.array([1.0, 0, -1, 0.5])
    s1, s2 = _random_cov(rng, 4), _random_cov(rng, 4)
    x = rng.multivariate_normal(mu1, s1, size=20000)
    y = rng.multivariate_normal(mu2, s2, size=20000)
    m, c = gaussian_stats(x)
    np.testing.assert_allclose(c, np.cov(x, rowvar=False))
    fd = frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
    assert fd == pytest.approx(_direct_fd(mu1, s1, mu2, s2), rel=0.05)


def test_fid_of_fewer_images_than_dimensions_equals_the_sqrtm_formula() -> None:
    """The low-rank shortcut of fid_from_features (N < D) against scipy's sqrtm on the same covariances."""
    from diffcompose.evaluation.fid import fid_from_features

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(7, 40)), rng.normal(0.3, 2.0, size=(9, 40))
    ridge = 1e-9 * np.eye(40)  # sqrtm needs the singular product nudged; the shortcut does not
    (m1, s1), (m2, s2) = gaussian_stats(x), gaussian_stats(y)
    assert fid_from_features(x, y) == pytest.approx(_direct_fd(m1, s1 + ridge, m2, s2 + ridge), rel=1e-5)
    assert fid_from_features(x, y) == pytest.approx(frechet_distance(m1, s1, m2, s2), rel=1e-4)


def test_lpips_is_the_weighted_sum_of_unit_normalised_feature_differences() -> None:
    g = torch.Generator().manual_seed(0)
    fa = [torch.randn(2, c, s, s, generator=g) for c, s in ((3, 4), (5, 2))]
    fb = [torch.randn(2, c, s, s, generator=g) for c, s in ((3, 4), (5, 2))]
    heads = [torch.rand(3, generator=g), torch.rand(5, generator=g)]
    got = lpips_from_features(fa, fb, heads).numpy()
    for n in range(2):
        expected = 0.0
        for a, b, w in zip(fa, fb, heads):
            a, b, w = a[n].numpy(), b[n].numpy(), w.numpy()
            na = a / (np.sqrt((a ** 2).sum(0)) + 1e-10)
            nb = b / (np.sqrt((b ** 2).sum(0)) + 1e-10)
            expected += np.mean(np.einsum("c,chw->hw", w, (na - nb) ** 2))
        assert got[n] == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from diffcompose.evaluation.tiny import write_tiny_metric_models

    return write_tiny_metric_models(tmp_path_factory.mktemp("metric_models"))


def _images():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)


def test_lpips_of_the_tiny_model_is_zero_for_identical_images_and_symmetric(tiny_models) -> None:
    lp = LPIPS.load(str(tiny_models / "vgg16"))
    a, _ = _images()
    b = np.ascontiguousarray(a[::-1])
    assert lp(a, a) == 0 and lp(a, b) > 0
    assert lp(a, b) == pytest.approx(lp(b, a), rel=1e-6)


@pytest.mark.parametrize("kind", ["clip", "dinov2"])
def test_image_similarity_is_one_for_identical_images_and_symmetric(tiny_models, kind) -> None:
    from diffcompose.evaluation.embeddings import ClipEmbedder, DinoEmbedder, image_similarity

    emb = (ClipEmbedder if kind == "clip" else DinoEmbedder).load(str(tiny_models / kind))
    a, b = _images()
    assert image_similarity(emb, a, a) == pytest.approx(1.0, abs=1e-5)
    assert image_similarity(emb, a, b) == pytest.approx(image_similarity(emb, b, a), abs=1e-6)
    assert image_similarity(emb, a, b) < 1 - 1e-6


def test_clip_score_is_100_times_the_clipped_text_image_cosine(tiny_models) -> None:
    from diffcompose.evaluation.embeddings import ClipEmbedder, clip_score

    emb = ClipEmbedder.load(str(tiny_models / "clip"))
    a, b = _images()
    for image in (a, b):
        for text in ("a cat", "a red car on a road"):
            cos = float(emb.images([image])[0] @ emb.texts([text])[0])
            assert clip_score(emb, image, text) == pytest.approx(100 * max(cos, 0), abs=1e-4)


def test_missing_model_weights_fail_in_one_line(tmp_path, monkeypatch) -> None:
    from diffcompose.evaluation.embeddings import ClipEmbedder, DinoEmbedder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for load, source in ((ClipEmbedder.load, str(tmp_path / "none")), (DinoEmbedder.load, "nobody/no-such-dino"),
                         (LPIPS.load, str(tmp_path / "none.safetensors"))):
        with pytest.raises(WeightsMissingError) as info:
            load(source)
        assert "\n" not in str(info.value)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsMissingError, match="pt_inception-2015-12-05") as info:
        find_weights(None, tmp_path)
    assert "\n" not in str(info.value)


def test_fmse_is_the_squared_error_over_the_mask_divided_by_its_area() -> None:
    out = np.zeros((2, 3, 3), np.uint8)
    truth = np.zeros((2, 3, 3), np.uint8)
    out[0, 0] = (3, 0, 0)      # in the mask: squared errors 9, 0, 0
    out[1, 2] = (0, 6, 0)      # in the mask: 36
    out[0, 2] = (100, 100, 100)  # outside: must not count
    mask = np.array([[1, 1, 0], [0, 0, 1]], bool)
    # iHarmony4: sum of squared errors over the mask / (mask area x channels)
    assert fmse(out, truth, mask) == pytest.approx((9 + 36) / (3 * 3))
    assert mse(out, truth) == pytest.approx((9 + 36 + 3 * 100 ** 2) / 18)


# FID network: facts about the published pt_inception-2015-12-05 state dict (names and shapes).
STANDARD_KEYS = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3), "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5), "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7), "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3), "Mixed_7b.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1), "fc.weight": (1008, 2048), "fc.bias": (1008,),
}


@pytest.mark.slow
def test_fid_network_has_the_standard_architecture_and_loads_the_standard_names(tmp_path) -> None:
    model = FIDInceptionV3()
    # torchvision's inception_v3 without the aux head (27,161,264 - 3,326,696) with a 1008-way fc.
    assert sum(p.numel() for p in model.parameters()) == 23_850_960
    # The published file predates num_batches_tracked: a state dict without it must load.
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    for key, shape in STANDARD_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    loaded = load_state(FIDInceptionV3(), state)
    assert torch.equal(loaded.Mixed_6c.branch7x7dbl_3.conv.weight, state["Mixed_6c.branch7x7dbl_3.conv.weight"])
    renamed = {k.replace("Mixed_7c", "Mixed_7d"): v for k, v in state.items()}
    with pytest.raises(WeightsMissingError, match="not an FID Inception checkpoint"):
        load_state(model, renamed)
    torch.save(state, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    net = load_inception(None, tmp_path)
    a, b = _images()
    feats = inception_features(net, [a, b])
    assert feats.shape == (2, 2048) and np.isfinite(feats).all() and (feats >= 0).all()  # after ReLU + mean
    np.testing.assert_allclose(inception_features(net, [b])[0], feats[1], rtol=1e-4, atol=1e-5)


def test_psnr_outside_the_region_is_background_preservation() -> None:
    from diffcompose.evaluation.evaluate import Loaded, _pixel

    base = np.full((10, 10, 3), 100, np.uint8)
    out = base.copy()
    region = np.zeros((10, 10), bool)
    region[2:5, 2:5] = True
    out[region] = 0  # inside: any change is free
    d = Loaded(out, base, None, region, None, None)
    assert _pixel("bg-mse", d) == 0 and _pixel("bg-psnr", d) == float("inf")
    out[9, 9] = (110, 100, 100)  # one outside pixel off by 10 in one channel
    assert _pixel("bg-mse", d) == pytest.approx(100 / (91 * 3))
    assert _pixel("bg-psnr", d) == pytest.approx(psnr(out, base, ~region))
