"""AnyDoor's sabotages (issue 21, items 1 and 5-8): each replaces ``old`` by ``new`` in ``path``, and at least
one of ``tests`` must then fail. Data for the mutation runner; nothing runs here."""

F = "tests/test_anydoor_fidelity.py::"
ENGINE = "src/diffcompose/methods/anydoor/engine.py"
DATA = "src/diffcompose/methods/anydoor/data.py"

MUTATIONS = [
    # item 1: what reaches the model
    dict(name="anydoor: conditional branch gets zeros instead of the DINOv2 ID tokens", path=ENGINE,
         old="cond = m.id_extractor(M.reference_to_tensor(ref.image, dev)).to(dt)",
         new="cond = torch.zeros_like(m.id_extractor(M.reference_to_tensor(ref.image, dev))).to(dt)",
         tests=[F + "test_engine_conditions_on_reference_tokens_zero_image_tokens_and_the_hf_collage"]),
    dict(name="anydoor: collage built from the raw reference instead of its high-frequency map", path=ENGINE,
         old="hint = P.build_hint(image, mask, ref.hf_map,",
         new="hint = P.build_hint(image, mask, ref.image,",
         tests=[F + "test_engine_conditions_on_reference_tokens_zero_image_tokens_and_the_hf_collage"]),
    dict(name="anydoor: unconditional branch gets the reference's tokens", path=ENGINE,
         old="uncond = m.id_extractor.uncond(1, dev).to(dt)",
         new="uncond = m.id_extractor(M.reference_to_tensor(ref.image, dev)).to(dt)",
         tests=[F + "test_engine_conditions_on_reference_tokens_zero_image_tokens_and_the_hf_collage"]),
    dict(name="anydoor train: high-frequency map of the un-augmented reference", path=DATA,
         old="hf = pp.high_frequency_map(ref, ref_m / 255.0)",
         new="hf = prepared.hf_map",
         tests=[F + "test_trainer_builds_the_hint_from_the_augmented_reference"]),
    # item 5: paste-back
    dict(name="anydoor: paste-back default back to the mask rule", path="src/diffcompose/methods/anydoor/options.py",
         old='paste_rule: Literal["box", "mask"] = option(\n        "box",',
         new='paste_rule: Literal["box", "mask"] = option(\n        "mask",',
         tests=[F + "test_default_paste_back_is_the_whole_expanded_box_and_nothing_outside"]),
    # item 6: input reading
    dict(name="anydoor: mask level 128 counts as the object", path=ENGINE,
         old="np.rint(levels[key] * 255.0) > OBJECT_LEVEL",
         new="np.rint(levels[key] * 255.0) >= OBJECT_LEVEL",
         tests=[F + "test_masks_are_read_above_128_and_a_transparent_reference_as_stored",
                F + "test_a_mask_at_128_only_is_refused_by_anydoor",
                F + "test_the_public_examples_are_read_as_the_public_scripts_read_them"]),
    dict(name="anydoor: transparent reference put on white", path=ENGINE,
         old='if "reference_rgb" in levels:',
         new='if False:',
         tests=[F + "test_masks_are_read_above_128_and_a_transparent_reference_as_stored",
                F + "test_the_public_examples_are_read_as_the_public_scripts_read_them"]),
    # item 7: timesteps
    dict(name="anydoor: diffusers' leading DDIM timesteps (30 steps from 958)", path=ENGINE,
         old="sched = public_ddim(m.scheduler_config, options.steps, dev)",
         new='sched = make_scheduler("ddim", m.scheduler_config)\n'
             "            sched.set_timesteps(options.steps, device=dev)",
         tests=[F + "test_the_engine_samples_at_the_public_timesteps"]),
    # item 8: training data
    dict(name="anydoor train: shape masks perturbed on a <= 64 px grid", path=DATA,
         old="    gh, gw = mask.shape\n    gt = mask.astype(np.uint8)\n",
         new="    if max(mask.shape) > 64:\n"
             "        s = 64 / max(mask.shape)\n"
             "        small = cv2.resize(mask.astype(np.float32), (max(1, round(mask.shape[1] * s)),\n"
             "                           max(1, round(mask.shape[0] * s))), interpolation=cv2.INTER_AREA) > 0\n"
             "        return cv2.resize(shape_mask(small, rng, rounds).astype(np.uint8), mask.shape[::-1],\n"
             "                          interpolation=cv2.INTER_NEAREST).astype(bool)\n"
             "    gh, gw = mask.shape\n    gt = mask.astype(np.uint8)\n",
         tests=[F + "test_shape_masks_are_perturbed_at_the_masks_own_pixels"]),
    dict(name="anydoor train: MOSE read as a plain video source", path=DATA,
         old='"mose": ("video", Rules((0, 1000), 10, "either")),',
         new='"mose": ("video", KIND_RULES["video"]),',
         tests=[F + "test_manifest_rules_of_mose_vipseg_and_try_on"]),
    dict(name="anydoor train: the dataset draws timesteps by kind, not by the source's rules", path=DATA,
         old="t = sample_timestep(rng, src.rule.timesteps, self.uniform_t_p)",
         new="t = sample_timestep(rng, src.kind, self.uniform_t_p)",
         tests=[F + "test_the_dataset_applies_each_sources_rules"]),
]
