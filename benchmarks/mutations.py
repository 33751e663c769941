"""Mutation check: does some test fail when one part of a method is sabotaged?

Each row of :data:`SABOTAGES` names one small change to the package's source (a file under
``src/diffcompose/``, an exact text that must occur there exactly once, its replacement) and
the tests that must catch it. For each row the script copies ``src/`` to a temporary folder,
applies that one change to the copy (the working tree is never touched), runs the named
tests with ``PYTHONPATH`` pointing at the copy, and counts the row as caught when pytest
reports a failure. First it runs all the named tests once on an unchanged copy: a failure
there would make every row look caught, so the script stops. It ends with ``caught k/n``
and the names of the rows that survived::

    .venv/bin/python benchmarks/mutations.py                      # every row
    .venv/bin/python benchmarks/mutations.py --engine freecompose  # one engine's rows
    .venv/bin/python benchmarks/mutations.py --only remove-weight-inverted --keep
    .venv/bin/python benchmarks/mutations.py --check               # texts still match (no tests)

Adding an engine's sabotages is adding rows (``engine`` groups them). A row whose text no
longer occurs exactly once is an error, so the table cannot silently go stale: the suite
runs ``--check``'s function (``tests/test_mutations.py``). Exit status: 0 when every row was
caught, 1 when some survived, 2 on a stale table or a failing baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "src/diffcompose"


@dataclass(frozen=True)
class Sabotage:
    """One change to one file of the package, and the pytest arguments that must catch it."""

    engine: str
    name: str
    issue: str  # where it was asked for, e.g. "21.4"
    file: str  # relative to src/diffcompose/
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]


PBSKETCH_PARITY = ("tests/methods/pbsketch/test_pbsketch_parity.py",)
OS_PARITY = ("tests/methods/objectstitch/test_objectstitch_parity.py",)
OS_TRAIN = ("tests/methods/objectstitch/test_objectstitch_train.py", "-m", "not slow")
UNIPAINT_PARITY = ("tests/methods/unipaint/test_unipaint_parity.py",)
UNIPAINT_GATE = ("tests/methods/unipaint/test_unipaint.py::test_masked_attention_applies_only_to_guided_sampling",)
FC = "methods/freecompose/engine.py"
FC_WIRING = ("tests/methods/freecompose/test_freecompose_wiring.py",)

PAGE_JS = "server/static/app.js"
PAGE_CSS = "server/static/style.css"
PAGE_T = "tests/server/test_page.py::"
BN_MODEL = "methods/brushnet/model.py"
BN_REFERENCE = ("tests/methods/brushnet/test_brushnet_parity.py::"
                "test_branch_and_residual_placement_match_the_written_out_reference",)
BN_CONDITIONING = ("tests/methods/brushnet/test_brushnet_parity.py::test_conditioning_is_masked_latent_then_keep_mask",
                   "tests/methods/brushnet/test_brushnet.py::test_denoising_matches_the_written_out_public_pipeline")

SABOTAGES: list[Sabotage] = [
    # ---- FreeCompose, issue 21 item 4: wiring in engine.py
    Sabotage("freecompose", "remove-weight-inverted", "21.4", FC,
             "weight = (m_lat + options.background_weight * (1 - m_lat))[None, None]",
             "weight = ((1 - m_lat) + options.background_weight * m_lat)[None, None]", FC_WIRING),
    Sabotage("freecompose", "remove-prompts-swapped", "21.4", FC,
             '["", "", options.source_prompt, options.target_prompt]))\n        attention = AttentionEdit("mask"',
             '["", "", options.target_prompt, options.source_prompt]))\n        attention = AttentionEdit("mask"',
             FC_WIRING),
    Sabotage("freecompose", "remove-attention-mask-inverted", "21.4", FC,
             "mask=torch.from_numpy(mask.astype(np.float32))",
             "mask=torch.from_numpy((~mask).astype(np.float32))", FC_WIRING),
    Sabotage("freecompose", "remove-perceptual-on-object", "21.4", FC,
             "keep = 1 - codec.mask_to_tensor(mask, self.device)",
             "keep = codec.mask_to_tensor(mask, self.device)", FC_WIRING),
    Sabotage("freecompose", "remove-decode-not-float32", "21.4", FC,
             "losses=losses, attention=attention, decode=self._decode32)",
             "losses=losses, attention=attention)", FC_WIRING),
    Sabotage("freecompose", "harmonize-perceptual-dropped", "21.4", FC,
             'progress=ctx.progress("harmonize", cfg.iterations), losses=losses, decode=self._decode32)',
             'progress=ctx.progress("harmonize", cfg.iterations), decode=self._decode32)', FC_WIRING),
    Sabotage("freecompose", "compose-maps-swapped", "21.4", FC,
             "[condition, edited_condition], options.adapter_scale",
             "[edited_condition, condition], options.adapter_scale", FC_WIRING),
    Sabotage("freecompose", "compose-adapter-scale-ignored", "21.4", FC,
             "[condition, edited_condition], options.adapter_scale)",
             "[condition, edited_condition], 1.0)", FC_WIRING),
    Sabotage("freecompose", "compose-inject-all-layers", "21.4", FC,
             'AttentionEdit("inject", tuple(z_src.shape[-2:]), min_layer=options.attn_layer,',
             'AttentionEdit("inject", tuple(z_src.shape[-2:]), min_layer=0,', FC_WIRING),
    Sabotage("freecompose", "guidance-fixed-at-1", "21.4", FC,
             "guidance=opts.guidance", "guidance=1.0", FC_WIRING),
    # ---- FreeCompose, more of the same kind
    Sabotage("freecompose", "harmonize-decode-not-float32", "21.4", FC,
             "losses=losses, decode=self._decode32)", "losses=losses)", FC_WIRING),
    Sabotage("freecompose", "remove-mask-all-layers", "21.4", FC,
             "min_layer=options.attn_layer, start_iter=options.attn_start)",
             "min_layer=0, start_iter=options.attn_start)", FC_WIRING),
    Sabotage("freecompose", "dds-step-deleted", "21.4", "methods/freecompose/dds.py",
             "            opt.step()\n", "",
             ("tests/methods/freecompose/test_freecompose_dds.py", "-k", "any_size")),
    # ---- FreeCompose, issue 21 item 11: the removal mask on token grids
    Sabotage("freecompose", "mask-sampled-nearest", "21.11", "attention/controller.py",
             'mode="bilinear", align_corners=False)[0, 0]', 'mode="nearest")[0, 0]',
             ("tests/methods/freecompose/test_freecompose_method.py", "-k", "mask_sampling or thin_stripe")),
    # ---- FreeCompose, issue 21 items 12 and 13: large photos
    Sabotage("freecompose", "window-ignores-band", "21.12", FC,
             "band=options.band)", "band=0.0)", ("tests/methods/freecompose/test_freecompose_window.py",)),
    Sabotage("freecompose", "condition-maps-area-shrunk", "21.13", "methods/engine.py",
             "args[key] = win.crop_lines(value)", "args[key] = win.crop_mask(value, soft=True)",
             ("tests/methods/freecompose/test_freecompose_window.py", "-k", "condition_map")),
    # ---- FreeCompose, issue 21 item 14: its window is planned on the UNet's stride (the shared planner pads it)
    Sabotage("freecompose", "window-not-on-the-unet-stride", "21.14", FC,
             "BandWindow(size, stride, context=options.context",
             "BandWindow(size, 8, context=options.context",
             ("tests/methods/freecompose/test_freecompose_window.py", "-k", "aspect or mirrored")),
    # ---- Every engine, issue 21 item 14: the window is resized straight to the multiple (stretched) again
    Sabotage("shared", "window-stretched-to-multiple", "21.14", "regions/crop.py",
             "return Window(box, canvas, None if content == canvas else content)",
             "return Window(box, canvas)",
             ("tests/regions/test_window_aspect.py", "tests/methods/sdinpaint/test_sdinpaint_window.py",
              "tests/methods/pbe/test_pbe_window.py",
              "tests/methods/freecompose/test_freecompose_window.py::test_a_small_photo_is_mirrored_to_the_stride_not_stretched")),
    # ---- SmartBrush, issue 21 item 2
    Sabotage("smartbrush", "smartbrush-level-ignored", "21.2", "methods/smartbrush/engine.py",
             "labels = torch.full((context.shape[0],), level,",
             "labels = torch.full((context.shape[0],), 0,",
             ("tests/methods/smartbrush/test_smartbrush_fidelity.py::test_the_requested_precision_level_reaches_the_unet_and_changes_the_output",)),
    Sabotage("smartbrush", "smartbrush-level-always-box", "21.2", "methods/smartbrush/engine.py",
             "labels = torch.full((context.shape[0],), level,",
             "labels = torch.full((context.shape[0],), self.levels,",
             ("tests/methods/smartbrush/test_smartbrush_fidelity.py::test_the_requested_precision_level_reaches_the_unet_and_changes_the_output",)),
    Sabotage("smartbrush", "smartbrush-no-step-blend", "21.2", "methods/smartbrush/engine.py",
             "return latents * keep_new + self.z0 * (1 - keep_new)",
             "return latents",
             ("tests/methods/smartbrush/test_smartbrush_fidelity.py::test_each_step_keeps_the_new_latents_only_inside_the_predicted_mask",)),
    Sabotage("smartbrush", "smartbrush-blend-with-user-mask", "21.2", "methods/smartbrush/engine.py",
             "keep_new = blend_region(self.prob, self.user, self.options.mask_threshold, self.cells)",
             "keep_new = (self.user > 0.5).float()",
             ("tests/methods/smartbrush/test_smartbrush_fidelity.py::test_each_step_keeps_the_new_latents_only_inside_the_predicted_mask",)),
    Sabotage("smartbrush", "smartbrush-blend-uncond-logit", "21.2", "methods/smartbrush/engine.py",
             "self.logit = logit.chunk(2)[1] if self.guided else logit",
             "self.logit = logit.chunk(2)[0] if self.guided else logit",
             ("tests/methods/smartbrush/test_smartbrush.py::test_the_mask_blend_keeps_the_conditional_logit_and_restores_the_background_outside_it",)),
    # ---- Paint-by-Example, issue 21 item 3
    Sabotage("pbe", "pbe-dropout-flag-disconnected", "21.3", "methods/pbe/train_model.py",
             "ctx = torch.where(drop[:, None, None], self.encoder.uncond_vector.to(ctx.dtype).expand_as(ctx), ctx)",
             "ctx = ctx",
             ("tests/methods/pbe/test_pbe_fidelity.py::test_a_dropped_sample_is_conditioned_on_the_unconditional_vector", "tests/methods/pbe/test_pbe_fidelity.py::test_the_dropout_flag_decides_which_condition_is_trained", "tests/methods/pbe/test_pbe_fidelity.py::test_the_training_loss_trains_the_unconditional_vector_when_it_drops")),
    Sabotage("pbe", "pbe-dropout-never-drawn", "21.3", "methods/pbe/train.py",
             "drop = condition_dropout(n, cond_dropout, cond_dropout_per, gen).to(z.device)",
             "drop = torch.zeros(n, dtype=torch.bool, device=z.device)",
             ("tests/methods/pbe/test_pbe_fidelity.py::test_the_training_loss_trains_the_unconditional_vector_when_it_drops",)),
    Sabotage("pbe", "pbe-uncond-vector-not-optimised", "21.3", "methods/pbe/train_model.py",
             'for n, p in model.named_parameters() if not n.startswith("encoder.model.")]',
             'for n, p in model.named_parameters() if not n.startswith(("encoder.model.", "encoder.uncond"))]',
             ("tests/methods/pbe/test_pbe_fidelity.py::test_the_training_loss_trains_the_unconditional_vector_when_it_drops",)),
    Sabotage("pbe", "pbe-unguided-half-gets-the-reference", "21.3", "methods/pbe/engine.py",
             "context = torch.cat([c.encoder.uncond(n, cond.shape[1]).to(dt), cond]) if guided else cond",
             "context = torch.cat([cond, cond]) if guided else cond",
             ("tests/methods/pbe/test_pbe_fidelity.py::test_inference_guides_against_the_learned_unconditional_vector",)),
    # ---- SmartBrush, issue 21 item 9
    Sabotage("smartbrush", "smartbrush-start-from-noised-image-by-default", "21.9", "methods/smartbrush/options.py",
             '"noise", "what sampling starts from inside the region',
             '"noised-image", "what sampling starts from inside the region',
             ("tests/methods/smartbrush/test_smartbrush_fidelity.py::test_sampling_starts_from_pure_noise_unless_told_otherwise",)),
    Sabotage("smartbrush", "smartbrush-start-noise-ignored", "21.9", "methods/smartbrush/engine.py",
             "region = noise * sched.init_noise_sigma",
             "region = sched.add_noise(z0, noise, sched.timesteps[:1].repeat(z0.shape[0]))",
             ("tests/methods/smartbrush/test_smartbrush_fidelity.py::test_sampling_starts_from_pure_noise_unless_told_otherwise",)),
    Sabotage("smartbrush", "smartbrush-text-to-image-ignores-caption-pairs", "21.9", "methods/smartbrush/data.py",
             "if not inpaint and self.pairs:",
             "if not inpaint and not self.pairs:",
             ("tests/methods/smartbrush/test_smartbrush_fidelity.py::test_text_to_image_samples_use_image_caption_pairs",)),
    Sabotage("smartbrush", "smartbrush-coco-captions-not-read", "21.9", "methods/smartbrush/data.py",
             'if im is not None and "segmentation" not in ann and',
             "if False and",
             ("tests/methods/smartbrush/test_smartbrush_fidelity.py::test_coco_captions_file_and_config",)),
    # ---- Paint-by-Example, issue 21 item 10
    Sabotage("pbe", "pbe-training-reference-not-bilinear", "21.10", "methods/pbe/augment.py",
             "REFERENCE_RESIZE = cv2.INTER_LINEAR",
             "REFERENCE_RESIZE = cv2.INTER_AREA",
             ("tests/methods/pbe/test_pbe_fidelity.py::test_training_resizes_the_reference_bilinearly_as_the_original",)),
    Sabotage("pbe", "pbe-inference-reference-bilinear", "21.10", "methods/pbe/reference.py",
             "STRETCH_FILTER = Image.BICUBIC",
             "STRETCH_FILTER = Image.BILINEAR",
             ("tests/methods/pbe/test_pbe_fidelity.py::test_inference_stretches_the_reference_as_the_original_script",)),
    # ---- AnyDoor, issue 21 item 1
    Sabotage("anydoor", "anydoor-cond-gets-zeros-not-id-tokens", "21.1", "methods/anydoor/engine.py",
             "cond = m.id_extractor(M.reference_to_tensor(ref.image, dev)).to(dt)",
             "cond = torch.zeros_like(m.id_extractor(M.reference_to_tensor(ref.image, dev))).to(dt)",
             ("tests/methods/anydoor/test_anydoor_fidelity.py::test_engine_conditions_on_reference_tokens_zero_image_tokens_and_the_hf_collage",)),
    Sabotage("anydoor", "anydoor-collage-from-raw-reference", "21.1", "methods/anydoor/engine.py",
             "hint = P.build_hint(image, mask, ref.hf_map,",
             "hint = P.build_hint(image, mask, ref.image,",
             ("tests/methods/anydoor/test_anydoor_fidelity.py::test_engine_conditions_on_reference_tokens_zero_image_tokens_and_the_hf_collage",)),
    Sabotage("anydoor", "anydoor-uncond-gets-reference-tokens", "21.1", "methods/anydoor/engine.py",
             "uncond = m.id_extractor.uncond(1, dev).to(dt)",
             "uncond = m.id_extractor(M.reference_to_tensor(ref.image, dev)).to(dt)",
             ("tests/methods/anydoor/test_anydoor_fidelity.py::test_engine_conditions_on_reference_tokens_zero_image_tokens_and_the_hf_collage",)),
    Sabotage("anydoor", "anydoor-train-hint-from-unaugmented-reference", "21.1", "methods/anydoor/data.py",
             "hf = pp.high_frequency_map(ref, ref_m / 255.0)",
             "hf = prepared.hf_map",
             ("tests/methods/anydoor/test_anydoor_fidelity.py::test_trainer_builds_the_hint_from_the_augmented_reference",)),
    # ---- AnyDoor, issue 21 item 5
    Sabotage("anydoor", "anydoor-paste-back-mask-rule-by-default", "21.5", "methods/anydoor/options.py",
             'paste_rule: Literal["box", "mask"] = option(\n        "box",',
             'paste_rule: Literal["box", "mask"] = option(\n        "mask",',
             ("tests/methods/anydoor/test_anydoor_fidelity.py::test_default_paste_back_is_the_whole_expanded_box_and_nothing_outside",)),
    # ---- AnyDoor, issue 21 item 6
    Sabotage("anydoor", "anydoor-mask-level-128-is-object", "21.6", "methods/anydoor/engine.py",
             "np.rint(levels[key] * 255.0) > OBJECT_LEVEL",
             "np.rint(levels[key] * 255.0) >= OBJECT_LEVEL",
             ("tests/methods/anydoor/test_anydoor_fidelity.py::test_masks_are_read_above_128_and_a_transparent_reference_as_stored", "tests/methods/anydoor/test_anydoor_fidelity.py::test_a_mask_at_128_only_is_refused_by_anydoor", "tests/methods/anydoor/test_anydoor_fidelity.py::test_the_public_examples_are_read_as_the_public_scripts_read_them")),
    Sabotage("anydoor", "anydoor-transparent-reference-on-white", "21.6", "methods/anydoor/engine.py",
             'if "reference_rgb" in levels:',
             "if False:",
             ("tests/methods/anydoor/test_anydoor_fidelity.py::test_masks_are_read_above_128_and_a_transparent_reference_as_stored", "tests/methods/anydoor/test_anydoor_fidelity.py::test_the_public_examples_are_read_as_the_public_scripts_read_them")),
    # ---- AnyDoor, issue 21 item 7
    Sabotage("anydoor", "anydoor-diffusers-ddim-timesteps", "21.7", "methods/anydoor/engine.py",
             "sched = public_ddim(m.scheduler_config, options.steps, dev)",
             'sched = make_scheduler("ddim", m.scheduler_config)\n            sched.set_timesteps(options.steps, device=dev)',
             ("tests/methods/anydoor/test_anydoor_fidelity.py::test_the_engine_samples_at_the_public_timesteps",)),
    # ---- AnyDoor, issue 21 item 8
    Sabotage("anydoor", "anydoor-train-shape-masks-on-64px-grid", "21.8", "methods/anydoor/data.py",
             "    gh, gw = mask.shape\n    gt = mask.astype(np.uint8)\n",
             "    if max(mask.shape) > 64:\n        s = 64 / max(mask.shape)\n        small = cv2.resize(mask.astype(np.float32), (max(1, round(mask.shape[1] * s)),\n                           max(1, round(mask.shape[0] * s))), interpolation=cv2.INTER_AREA) > 0\n        return cv2.resize(shape_mask(small, rng, rounds).astype(np.uint8), mask.shape[::-1],\n                          interpolation=cv2.INTER_NEAREST).astype(bool)\n    gh, gw = mask.shape\n    gt = mask.astype(np.uint8)\n",
             ("tests/methods/anydoor/test_anydoor_fidelity.py::test_shape_masks_are_perturbed_at_the_masks_own_pixels",)),
    Sabotage("anydoor", "anydoor-train-mose-as-plain-video", "21.8", "methods/anydoor/data.py",
             '"mose": ("video", Rules((0, 1000), 10, "either")),',
             '"mose": ("video", KIND_RULES["video"]),',
             ("tests/methods/anydoor/test_anydoor_fidelity.py::test_manifest_rules_of_mose_vipseg_and_try_on",)),
    Sabotage("anydoor", "anydoor-train-timesteps-by-kind-not-source", "21.8", "methods/anydoor/data.py",
             "t = sample_timestep(rng, src.rule.timesteps, self.uniform_t_p)",
             "t = sample_timestep(rng, src.kind, self.uniform_t_p)",
             ("tests/methods/anydoor/test_anydoor_fidelity.py::test_the_dataset_applies_each_sources_rules",)),
    # ---- the server and the progress contract, issue 22 (job states, error fields, model picker)
    Sabotage("server", "start-event-not-sent", "22", "methods/engine.py",
             "ctx.start(job.task)  # the one start event", "ctx.check()  # the one start event",
             ("tests/methods/test_engine_contract.py::test_progress_events",)),
    Sabotage("server", "start-event-cancel-ignored", "22", "progress.py",
             "            self.check()  # a cancel from the listener stops even a one-pass engine",
             "            pass  # a cancel from the listener stops even a one-pass engine",
             ("tests/methods/test_engine_contract.py::test_cancel_at_the_start_event",)),
    Sabotage("server", "stream-skips-state-events", "22", "server/app.py",
             "                seen = seq\n                yield _sse(name, data)",
             "                seen = seq\n                if name == 'state':\n                    continue\n"
             "                yield _sse(name, data)",
             ("tests/server/test_server_api.py::test_every_state_is_streamed_queued_with_position_then_loading_running_finishing_done",)),
    Sabotage("server", "queue-not-renumbered-on-cancel", "22", "server/jobs.py",
             "self._finish(rec, \"cancelled\")\n                self._renumber()",
             "self._finish(rec, \"cancelled\")",
             ("tests/server/test_server_api.py::test_every_state_is_streamed_queued_with_position_then_loading_running_finishing_done",)),
    Sabotage("server", "no-finishing-after-last-step", "22", "server/jobs.py",
             "rec.set_status(\"finishing\" if ev.step >= ev.total > 0 else \"running\")",
             "rec.set_status(\"running\")",
             ("tests/server/test_server_api.py::test_every_state_is_streamed_queued_with_position_then_loading_running_finishing_done",)),
    Sabotage("server", "loading-even-when-loaded", "22", "server/jobs.py",
             "if self.engines.is_loaded(sub.engine, device=sub.device, dtype=sub.dtype, model=sub.model):",
             "if False:",
             ("tests/server/test_server_api.py::test_every_state_is_streamed_queued_with_position_then_loading_running_finishing_done",)),
    Sabotage("server", "http-message-in-cli-words", "22", "errors.py",
             "return render(getattr(exc, \"template\", str(exc)), \"http\")", "return str(exc)",
             ("tests/server/test_server_api.py::test_errors_name_the_request_field_in_the_request_s_words_and_the_cli_keeps_its_flags",)),
    Sabotage("server", "cli-message-in-http-words", "22", "errors.py",
             "group = 1 if surface == \"cli\" else 2", "group = 2",
             ("tests/server/test_server_api.py::test_errors_name_the_request_field_in_the_request_s_words_and_the_cli_keeps_its_flags",)),
    Sabotage("server", "reader-errors-not-blamed-on-their-upload", "22", "server/validate.py",
             "exc.field = names[max(hits, key=len)] if hits else None", "exc.field = None",
             ("tests/server/test_server_api.py::test_errors_name_the_request_field_in_the_request_s_words_and_the_cli_keeps_its_flags",)),
    Sabotage("server", "models-of-every-class", "22", "models/hub.py",
             "if snapshots and declared_classes(snapshots[-1]) & wanted:", "if snapshots:",
             ("tests/server/test_server_api.py::test_engines_offer_their_models_from_the_registry_the_cache_and_the_model_dir",)),
    Sabotage("server", "default-model-never-cached", "22", "server/schema.py",
             "\"cached\": in_hub_cache(default) or in_model_dir(default, model_dir) is not None})",
             "\"cached\": in_model_dir(default, model_dir) is not None})",
             ("tests/server/test_server_api.py::test_engines_offer_their_models_from_the_registry_the_cache_and_the_model_dir",)),
    Sabotage("server", "uncached-model-goes-to-the-loader", "22", "server/jobs.py",
             "if not self.allow_downloads:\n                check_cached(sub)",
             "if False:\n                check_cached(sub)",
             ("tests/server/test_server_api.py::test_a_model_neither_local_nor_cached_fails_within_a_second_without_the_network",)),
    # ---- the page (server/static), issue 22
    Sabotage("page", "page-brush-width-in-screen-pixels", "22.zoom", PAGE_JS,
             "ctx.lineWidth = S.brush;", "ctx.lineWidth = S.brush / S.view.s;", (PAGE_T + "test_zoom_pan_and_the_brush_at_true_size",)),
    Sabotage("page", "page-zoom-not-about-the-pointer", "22.zoom", PAGE_JS,
             "S.view = { s, tx: mx - (mx - v.tx) * s / v.s, ty: my - (my - v.ty) * s / v.s, fit: false };",
             "S.view = { s, tx: v.tx, ty: v.ty, fit: false };", (PAGE_T + "test_zoom_pan_and_the_brush_at_true_size",)),
    Sabotage("page", "page-cursor-ignores-zoom", "22.zoom", PAGE_JS,
             "const r = Math.max(0.5, S.brush / 2 * k);", "const r = Math.max(0.5, S.brush / 2 * dpr);",
             (PAGE_T + "test_zoom_pan_and_the_brush_at_true_size",)),
    Sabotage("page", "page-before-url-revoked", "22.before-after", PAGE_JS,
             "if (S.imageURL && !S.inUse.has(S.imageURL)) URL.revokeObjectURL(S.imageURL);",
             "if (S.imageURL) URL.revokeObjectURL(S.imageURL);", (PAGE_T + "test_before_after_for_every_result_of_the_session",)),
    Sabotage("page", "page-same-file-not-reopened", "22.open", PAGE_JS,
             'ev.target.value = ""; // so that opening the same file again fires "change" again', "",
             (PAGE_T + "test_opening_images_again_by_drop_and_by_paste",)),
    Sabotage("page", "page-paste-ignored", "22.open", PAGE_JS,
             'openImage(namedImage(item.getAsFile(), "pasted"));', "", (PAGE_T + "test_opening_images_again_by_drop_and_by_paste",)),
    Sabotage("page", "page-queue-position-dropped", "22.states", PAGE_JS,
             'd.position ? `queued: number ${d.position} in line` : "queued…"', '"queued…"',
             (PAGE_T + "test_job_states_are_shown_honestly",)),
    Sabotage("page", "page-one-pass-counts-steps", "22.states", PAGE_JS,
             "    if (d.total) {", "    if (true) {", (PAGE_T + "test_job_states_are_shown_honestly",)),
    Sabotage("page", "page-error-field-ignored", "22.errors", PAGE_JS,
             'const control = field && ($("opt-" + field)', 'const control = false && ($("opt-" + field)',
             (PAGE_T + "test_errors_once_next_to_their_control",)),
    Sabotage("page", "page-error-shown-twice", "22.errors", PAGE_JS,
             'setStatus(state, state === "error" ? "failed" : message);', "setStatus(state, message);",
             (PAGE_T + "test_errors_once_next_to_their_control", PAGE_T + "test_job_states_are_shown_honestly")),
    Sabotage("page", "page-unit-float-not-a-slider", "22.registry", PAGE_JS,
             'const isUnitSlider = (o) => o.type === "float" &&', 'const isUnitSlider = (o) => o.type === "int" &&',
             (PAGE_T + "test_task_tabs_and_option_controls_from_the_registry",)),
    Sabotage("page", "page-choice-sent-as-text", "22.registry", PAGE_JS,
             "JSON.parse(el.dataset.choices).find((c) => String(c) === el.value)", "el.value",
             (PAGE_T + "test_the_new_engines_run_from_the_page[powerpaint]",)),
    Sabotage("page", "page-slider-rounds-a-small-default", "22.registry", PAGE_JS,
             "o.max <= 1 && onSliderStep(o.default);", "o.max <= 1;",
             (PAGE_T + "test_the_new_engines_run_from_the_page[unipaint]",)),
    Sabotage("page", "page-tabs-hard-coded-count", "22.registry", PAGE_JS,
             "  for (const t of tasks) {\n    const b", "  for (const t of tasks.slice(0, 8)) {\n    const b",
             (PAGE_T + "test_task_tabs_and_option_controls_from_the_registry",)),
    Sabotage("page", "page-model-free-text-missing", "22.models", PAGE_JS,
             'if (!e || takesModel(e)) select.add(new Option("other… (type a hub id or folder)", OTHER_MODEL));', "",
             (PAGE_T + "test_model_picker_from_the_engines",)),
    Sabotage("page", "page-escape-does-not-cancel", "22.keys", PAGE_JS,
             "if (jobActive()) { ev.preventDefault(); cancel(); }", "if (false) { ev.preventDefault(); cancel(); }",
             (PAGE_T + "test_keyboard_help_run_and_escape",)),
    Sabotage("page", "page-clicks-go-to-grabcut-first", "22.registry", PAGE_JS,
             "return clicks ? [...withModel, ...without] : [...without, ...withModel];",
             "return [...without, ...withModel];", ("tests/server/test_browser.py::test_box_and_clicks_to_mask_then_edit_it",)),
    Sabotage("page", "page-laptop-columns-stacked", "22.layout", PAGE_CSS,
             "main { flex: 1; min-height: 0; display: grid;", "main { flex: 1; min-height: 0; display: block;",
             (PAGE_T + "test_laptop_layout_everything_in_view",)),
    Sabotage("page", "page-phone-columns-side-by-side", "22.layout", PAGE_CSS,
             "  main { display: flex; flex-direction: column; padding: 6px; gap: 8px; }",
             "  main { display: flex; padding: 6px; gap: 8px; }",
             (PAGE_T + "test_phone_layout_stacks_without_sideways_scroll",)),
    # ---- BrushNet, issue 23 items 1 and 4: the branch, where its residuals go, the conditioning, blending
    Sabotage("brushnet", "brushnet-mid-zero-conv-dropped", "23.4", BN_MODEL,
             "        mid = self.brushnet_mid_block(x)\n", "        mid = x\n", BN_REFERENCE),
    Sabotage("brushnet", "brushnet-mask-channel-order", "23.4", BN_MODEL,
             "    return torch.cat([masked_latent, keep], dim=1)", "    return torch.cat([keep, masked_latent], dim=1)",
             BN_CONDITIONING),
    Sabotage("brushnet", "brushnet-mask-polarity", "23.4", BN_MODEL,
             "    keep = (1 - hole).to(masked_latent.dtype)", "    keep = hole.to(masked_latent.dtype)", BN_CONDITIONING),
    Sabotage("brushnet", "brushnet-blending-missing", "23.4", "methods/brushnet/engine.py",
             "        if options.blend:\n", "        if False:\n",
             ("tests/methods/brushnet/test_brushnet.py::test_the_engine_blends_by_default_and_can_be_told_not_to",)),
    Sabotage("brushnet", "brushnet-up-residuals-dropped", "23.4", BN_MODEL,
             "x = walk_up_block(block, x, res, emb, encoder_hidden_states, size, add=up)",
             "x = walk_up_block(block, x, res, emb, encoder_hidden_states, size)", BN_REFERENCE),
    Sabotage("brushnet", "brushnet-first-residual-on-the-skip", "23.4", BN_MODEL,
             "    skips: tuple[torch.Tensor, ...] = (x,)  # kept before the first residual is added (as the public UNet)\n"
             "    r = _pop(down)\n    x = x if r is None else x + r\n",
             "    r = _pop(down)\n    x = x if r is None else x + r\n    skips: tuple[torch.Tensor, ...] = (x,)\n",
             BN_REFERENCE),
    Sabotage("brushnet", "brushnet-masked-image-not-black", "23.4", "methods/brushnet/engine.py",
             "masked = image * (~mask.astype(bool))[:, :, None]", "masked = image",
             ("tests/methods/brushnet/test_brushnet.py::"
              "test_a_windows_conditioning_is_the_black_holed_latent_and_the_keep_mask",
              "tests/methods/brushnet/test_brushnet.py::test_denoising_matches_the_written_out_public_pipeline")),
    # ---- Paint-by-Sketch, issue 24: the sketch channels and the share of the steps that see them
    Sabotage("pbsketch", "pbsketch-sketch-channels-removed", "24.2", "methods/pbsketch/sketch.py",
             "    kept = strokes * hole.astype(np.float32)\n",
             "    kept = 0 * strokes * hole.astype(np.float32)\n", PBSKETCH_PARITY),
    Sabotage("pbsketch", "pbsketch-sketch-polarity-inverted", "24.2", "methods/pbsketch/sketch.py",
             "(2.0 * kept - 1.0)[None]", "(1.0 - 2.0 * kept)[None]", PBSKETCH_PARITY),
    Sabotage("pbsketch", "pbsketch-sketch-not-limited-to-the-hole", "24.2", "methods/pbsketch/sketch.py",
             "    kept = strokes * hole.astype(np.float32)\n", "    kept = strokes\n", PBSKETCH_PARITY),
    Sabotage("pbsketch", "pbsketch-partial-steps-ignored", "24.2", "methods/pbsketch/engine.py",
             "        shown = sketch_shown(call, steps, calls, share)\n", "        shown = True\n", PBSKETCH_PARITY),
    Sabotage("pbsketch", "pbsketch-hidden-sketch-is-minus-one", "24.2", "methods/pbsketch/engine.py",
             "    hidden = torch.zeros_like(latent)\n", "    hidden = -torch.ones_like(latent)\n", PBSKETCH_PARITY),
    Sabotage("pbsketch", "pbsketch-plms-first-evaluation-not-counted", "24.2", "methods/pbsketch/sketch.py",
             "    step = max(call - (calls - steps), 0)\n", "    step = call\n", PBSKETCH_PARITY),
    # ---- ObjectStitch, issue 24: the adaptor, the object and box inputs, guidance, the sampler
    Sabotage("objectstitch", "objectstitch-adaptor-bypassed", "24.2", "methods/pbe/encoder.py",
             "return self.proj_out(self.final_layer_norm(self.mapper(x)))",
             "return self.proj_out(self.final_layer_norm(x))", OS_PARITY),
    Sabotage("objectstitch", "objectstitch-adaptor-reads-the-pooled-token", "24.2", "methods/pbe/encoder.py",
             'if self.tokens == "patches":', "if False:", OS_PARITY),
    Sabotage("objectstitch", "objectstitch-mask-polarity-swapped", "24.2", "methods/objectstitch/engine.py",
             "self._paint(image=image, mask=hole,", "self._paint(image=image, mask=~hole,", OS_PARITY),
    # (the unguided half given the reference is the pbe row pbe-unguided-half-gets-the-reference, same line)
    Sabotage("objectstitch", "objectstitch-unconditional-branch-zeros", "24.2", "methods/pbe/engine.py",
             "torch.cat([c.encoder.uncond(n, cond.shape[1]).to(dt), cond])", "torch.cat([torch.zeros_like(cond), cond])",
             OS_PARITY),
    Sabotage("objectstitch", "objectstitch-object-background-white", "24.2", "methods/objectstitch/preprocess.py",
             "np.zeros_like(obj)", "np.full_like(obj, 255)", OS_PARITY),
    Sabotage("objectstitch", "objectstitch-object-resized-bicubic", "24.2", "methods/objectstitch/preprocess.py",
             "OBJECT_FILTER = Image.BILINEAR", "OBJECT_FILTER = Image.BICUBIC", OS_PARITY),
    Sabotage("objectstitch", "objectstitch-latent-mask-bilinear", "24.2", "methods/objectstitch/preprocess.py",
             'LATENT_MASK = "nearest"', 'LATENT_MASK = "bilinear"', OS_PARITY),
    Sabotage("objectstitch", "objectstitch-ddim-diffusers-timesteps", "24.2", "methods/objectstitch/engine.py",
             'if options.scheduler == "ddim":', "if False:", OS_PARITY),
    # ---- ObjectStitch, issue 24.3: the training recipe and MureObjectStitch's few-shot condition
    Sabotage("objectstitch", "objectstitch-train-adaptor-not-frozen", "24.3", "methods/objectstitch/train.py",
             "encoder.requires_grad_(False)\n", "encoder.requires_grad_(True)\n", OS_TRAIN),
    Sabotage("objectstitch", "objectstitch-train-unconditional-is-zeros", "24.3", "methods/objectstitch/train.py",
             "self.encoder.uncond_vector.to(ctx.dtype).expand_as(ctx)", "torch.zeros_like(ctx)", OS_TRAIN),
    Sabotage("objectstitch", "objectstitch-train-object-background-kept", "24.3", "methods/objectstitch/data.py",
             "prepare_object(o, om > 0, size=self.object_size)", "prepare_object(o, None, size=self.object_size)",
             OS_TRAIN),
    Sabotage("objectstitch", "objectstitch-train-few-shot-own-object-only", "24.3", "methods/objectstitch/data.py",
             "        if self.few_shot:  # every photo's object", "        if False:  # every photo's object", OS_TRAIN),
    Sabotage("objectstitch", "objectstitch-train-no-perspective", "24.3", "methods/objectstitch/augment.py",
             "if rng.random() < self.perspective_p:", "if False:", OS_TRAIN),
    Sabotage("objectstitch", "objectstitch-train-no-background-crop", "24.3", "methods/objectstitch/augment.py",
             "if rng.random() < self.crop_bg_p else None", "if False else None", OS_TRAIN),
    Sabotage("pbsketch", "pbsketch-train-binarised-at-or-above", "24.3", "methods/pbsketch/extract.py",
             "return (edges > threshold).astype(np.float32)", "return (edges >= threshold).astype(np.float32)",
             ("tests/methods/pbsketch/test_pbsketch_train.py::test_binarisation_is_the_public_threshold",)),
    Sabotage("pbsketch", "pbsketch-train-sketch-not-cut-with-the-image", "24.3", "methods/pbsketch/train.py",
             "cv2.resize(strokes[crop.slices], (self.resolution,) * 2",
             "cv2.resize(strokes, (self.resolution,) * 2",
             ("tests/methods/pbsketch/test_pbsketch_train.py::test_the_dataset_gives_the_sketch_inside_the_hole_with_the_image",)),
    Sabotage("pbsketch", "pbsketch-train-sketch-channels-dropped", "24.3", "methods/pbe/train.py",
             "pred = model(noisy, z_masked, keep_lat, reference.to(weight_dtype), drop, t, *extra)",
             "pred = model(noisy, z_masked, keep_lat, reference.to(weight_dtype), drop, t)",
             ("tests/methods/pbsketch/test_pbsketch_train.py::test_train_pbsketch_on_two_cpu_processes",)),
    Sabotage("pbsketch", "opt-in-input-silently-ignored", "24.1", "methods/registry.py",
             "    refused = [k for k in given if k not in takes]\n", "    refused = []\n",
             ("tests/methods/test_task_spec.py::test_an_opt_in_input_is_taken_only_by_the_engines_that_declare_it",
              "tests/methods/pbsketch/test_pbsketch_e2e.py::test_http_request_picks_the_engine_that_takes_the_sketch")),
    # ---- Uni-paint, issue 24: masked fine-tuning, masked attention, stroke start, exemplar token, blending
    Sabotage("unipaint", "unipaint-loss-not-masked", "24.2", "methods/unipaint/tuning.py",
             "    return F.mse_loss(pred * keep, noise * keep)\n", "    return F.mse_loss(pred, noise)\n",
             UNIPAINT_PARITY),
    Sabotage("unipaint", "unipaint-latent-hole-not-dilated", "24.2", "methods/unipaint/tuning.py",
             "    return F.max_pool2d(m, 3, stride=1, padding=1)\n", "    return m\n", UNIPAINT_PARITY),
    Sabotage("unipaint", "unipaint-self-attention-control-removed", "24.2", "methods/unipaint/attention.py",
             "    return probs * (1 - outside_reads_inside)[None]\n", "    return probs\n", UNIPAINT_PARITY),
    Sabotage("unipaint", "unipaint-cross-attention-control-removed", "24.2", "methods/unipaint/attention.py",
             "        return torch.cat([probs[:, :, :1], probs[:, :, 1:] * region[None, :, None]], dim=2)\n",
             "        return probs\n", UNIPAINT_PARITY),
    Sabotage("unipaint", "unipaint-self-attention-control-inverted", "24.2", "methods/unipaint/attention.py",
             "    outside_reads_inside = (1 - region)[:, None] * region[None, :]\n",
             "    outside_reads_inside = region[:, None] * (1 - region)[None, :]\n", UNIPAINT_PARITY),
    Sabotage("unipaint", "unipaint-attention-control-when-unguided", "24.2", "methods/unipaint/engine.py",
             "active=guided and options.masked_attention)", "active=options.masked_attention)", UNIPAINT_GATE),
    Sabotage("unipaint", "unipaint-stroke-start-inverted", "24.2", "methods/unipaint/sampling.py",
             "    return Blend(z_stroke, stroke_mask, tau, tau + STROKE_WINDOW)\n",
             "    return Blend(z_stroke, stroke_mask, 1 - tau, 1 - tau + STROKE_WINDOW)\n", UNIPAINT_PARITY),
    Sabotage("unipaint", "unipaint-stroke-window-wrong", "24.2", "methods/unipaint/sampling.py",
             "STROKE_WINDOW = 0.02\n", "STROKE_WINDOW = 0.2\n", UNIPAINT_PARITY),
    Sabotage("unipaint", "unipaint-prompt-read-before-the-stroke", "24.2", "methods/unipaint/sampling.py",
             "    return tau is None or index / total < tau\n", "    return True\n", UNIPAINT_PARITY),
    Sabotage("unipaint", "unipaint-exemplar-token-not-replaced", "24.2", "methods/unipaint/exemplar.py",
             "        out[args[0] == token] = embedding.to(out.dtype)\n", "        out = out\n", UNIPAINT_PARITY),
    Sabotage("unipaint", "unipaint-auto-word-least-similar", "24.2", "methods/unipaint/exemplar.py",
             "    return int(logits[:, 0].argmax())\n", "    return int(logits[:, 0].argmin())\n", UNIPAINT_PARITY),
    Sabotage("unipaint", "unipaint-background-not-blended", "24.2", "methods/unipaint/sampling.py",
             "    return Blend(z_known, 1 - hole, 0.0, 1.0)\n", "    return Blend(z_known, 1 - hole, 2.0, 3.0)\n",
             UNIPAINT_PARITY),
    # ---- PowerPaint, issue 23 items 2 and 4: task prompts, fitting degree, v2 wiring, outpaint, auto
    Sabotage("powerpaint", "powerpaint-task-tokens-swapped", "23.4", "methods/powerpaint/prompts.py",
             'return TaskPrompts((pos + " P_ctxt", pos + " P_ctxt"), (neg + " P_obj", neg + " P_obj"), prompt,',
             'return TaskPrompts((pos + " P_obj", pos + " P_obj"), (neg + " P_ctxt", neg + " P_ctxt"), prompt,',
             ("tests/methods/powerpaint/test_powerpaint_prompts.py",)),
    Sabotage("powerpaint", "powerpaint-negative-prompt-wrong", "23.4", "methods/powerpaint/prompts.py",
             "pos, neg = prompt, negative_prompt + QUALITY_NEGATIVE",
             "pos, neg = prompt, negative_prompt",
             ("tests/methods/powerpaint/test_powerpaint_prompts.py",)),
    Sabotage("powerpaint", "powerpaint-interpolation-inverted", "23.4", "methods/powerpaint/tokens.py",
             "return (a * t + (1 - t) * b).to(text_encoder.dtype)",
             "return (a * (1 - t) + t * b).to(text_encoder.dtype)",
             ("tests/methods/powerpaint/test_powerpaint_prompts.py",)),
    Sabotage("powerpaint", "powerpaint-fitting-degree-inverted", "23.4", "methods/powerpaint/engine.py",
             "options.fitting_degree if shape else 1.0",
             "1 - options.fitting_degree if shape else 1.0",
             ("tests/methods/powerpaint/test_powerpaint_parity.py",
              "tests/methods/powerpaint/test_powerpaint.py::test_the_fitting_degree_reaches_the_shape_context_only")),
    Sabotage("powerpaint", "powerpaint-v2-hole-not-black", "23.4", "methods/powerpaint/engine.py",
             "np.where(mask[..., None], 0, image).astype(np.uint8)",
             "image",
             ("tests/methods/powerpaint/test_powerpaint_parity.py",
              "tests/methods/powerpaint/test_powerpaint.py::test_v2_wiring_without_the_mirror")),
    Sabotage("powerpaint", "powerpaint-v2-posterior-mean", "23.4", "methods/powerpaint/engine.py",
             "black, make_generator(seed), samples=halves * n)",
             "black, None, samples=halves * n)",
             ("tests/methods/powerpaint/test_powerpaint_parity.py",
              "tests/methods/powerpaint/test_powerpaint.py::test_v2_wiring_without_the_mirror")),
    Sabotage("powerpaint", "powerpaint-v2-one-posterior-sample-copied", "23.4", "methods/powerpaint/engine.py",
             "black, make_generator(seed), samples=halves * n)",
             "black, make_generator(seed)).expand(halves * n, -1, -1, -1)",
             ("tests/methods/powerpaint/test_powerpaint_parity.py",
              "tests/methods/powerpaint/test_powerpaint.py::test_v2_wiring_without_the_mirror")),
    Sabotage("powerpaint", "powerpaint-v2-contexts-swapped", "23.4", "methods/powerpaint/engine.py",
             "residuals = pp.brushnet(x, t, context, cond, conditioning_scale=scale)\n"
             "            return unet_with_residuals(sd.unet, x, t, base, residuals)",
             "residuals = pp.brushnet(x, t, base, cond, conditioning_scale=scale)\n"
             "            return unet_with_residuals(sd.unet, x, t, context, residuals)",
             ("tests/methods/powerpaint/test_powerpaint_parity.py",
              "tests/methods/powerpaint/test_powerpaint.py::test_v2_wiring_without_the_mirror")),
    Sabotage("powerpaint", "powerpaint-v1-masked-image-polarity", "23.4", "methods/powerpaint/engine.py",
             "* (hole < 0.5)", "* (hole > 0.5)",
             ("tests/methods/powerpaint/test_powerpaint_parity.py",
              "tests/methods/powerpaint/test_powerpaint.py::test_v1_denoising_matches_the_written_out_public_loop")),
    Sabotage("powerpaint", "powerpaint-v1-mask-channel-order", "23.4", "methods/powerpaint/engine.py",
             "cond = torch.cat([F.interpolate(hole, size=size), z_masked], 1)",
             "cond = torch.cat([z_masked[:, :1], F.interpolate(hole, size=size), z_masked[:, 1:]], 1)",
             ("tests/methods/powerpaint/test_powerpaint_parity.py",
              "tests/methods/powerpaint/test_powerpaint.py::test_v1_denoising_matches_the_written_out_public_loop")),
    Sabotage("powerpaint", "outpaint-original-marked-new", "23.2", "methods/tasks.py",
             "new[top:top + image.shape[0], left:left + image.shape[1]] = False",
             "new[top:top + image.shape[0], left:left + image.shape[1]] = True",
             ("tests/methods/powerpaint/test_powerpaint.py",)),
    Sabotage("powerpaint", "auto-ignores-missing-weights", "23.5", "methods/registry.py",
             "skipped.append(f\"{info.name}: {no_weights} (--engine {info.name} downloads them)\")\n            continue",
             "skipped.append(f\"{info.name}: {no_weights} (--engine {info.name} downloads them)\")",
             ("tests/methods/powerpaint/test_powerpaint.py::test_auto_offers_powerpaint_for_removal_only_with_local_weights",)),
]


def check(rows: list[Sabotage], src: Path = REPO / PACKAGE) -> list[str]:
    """Problems of the table against a source tree: texts that do not occur exactly once."""
    problems = []
    names = [r.name for r in rows]
    problems += [f"duplicate row name {n!r}" for n in sorted({n for n in names if names.count(n) > 1})]
    for row in rows:
        path = src / row.file
        if not path.is_file():
            problems.append(f"{row.name}: no file {row.file}")
            continue
        count = path.read_text(encoding="utf-8").count(row.old)
        if count != 1:
            problems.append(f"{row.name}: its text occurs {count} times in {row.file} (must be once)")
        if row.old == row.new:
            problems.append(f"{row.name}: the replacement is the text itself")
    return problems


def _copy_source(dest: Path, source: Path = REPO / "src") -> Path:
    shutil.copytree(source, dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest / "src"


def _pytest(src: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    """Run pytest on ``tests`` with the package imported from ``src``; (exit status, last lines)."""
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider"]
    try:
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s"
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    return done.returncode, " | ".join(tail)


def _imports_from(src: Path) -> bool:
    """Whether ``diffcompose`` is imported from ``src`` (an installed copy must not win)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", "import diffcompose; print(diffcompose.__file__)"], cwd=REPO,
                         env=env, capture_output=True, text=True, check=False).stdout.strip()
    return Path(out).resolve().is_relative_to(src.resolve())


def _union(rows: list[Sabotage]) -> tuple[str, ...]:
    """One pytest invocation that runs every row's tests (files with ``-k`` run whole)."""
    files = []
    for row in rows:
        for arg in row.tests:
            if arg.startswith("tests/") and arg not in files:
                files.append(arg)
    return tuple(files)


def run(rows: list[Sabotage], *, timeout: float, baseline: bool, keep: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="mutations-") as tmp:
        clean = _copy_source(Path(tmp) / "clean")
        if not _imports_from(clean):
            print("diffcompose is not imported from the copy (PYTHONPATH loses to an install?)", file=sys.stderr)
            return 2
        if baseline:
            code, tail = _pytest(clean, _union(rows), timeout * 3)
            if code != 0:
                print(f"baseline: the tests fail without any sabotage ({tail})", file=sys.stderr)
                return 2
            print("baseline: the named tests pass on the unchanged source", flush=True)
        survived = []
        for i, row in enumerate(rows, 1):
            work = Path(tmp) / f"m{i}"
            src = _copy_source(work, clean)  # the snapshot taken at the start, whatever happens to src/ since
            path = src / "diffcompose" / row.file
            path.write_text(path.read_text(encoding="utf-8").replace(row.old, row.new, 1), encoding="utf-8")
            start = time.perf_counter()
            code, tail = _pytest(src, row.tests, timeout)
            verdict = {0: "SURVIVED", 1: "caught"}.get(code, f"error (pytest exit {code})")
            print(f"[{i}/{len(rows)}] {row.engine} {row.name} ({row.issue}): {verdict} "
                  f"in {time.perf_counter() - start:.0f} s", flush=True)
            if code != 1:
                survived.append(row.name)
                print(f"    {tail}", flush=True)
            if keep:
                kept = Path(tempfile.gettempdir()) / f"mutation-{row.name}"
                shutil.copytree(work, kept, dirs_exist_ok=True)
                print(f"    kept {kept}", flush=True)
            shutil.rmtree(work)
        print(f"caught {len(rows) - len(survived)}/{len(rows)}")
        if survived:
            print("survived: " + ", ".join(survived))
        return 1 if survived else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", action="append", help="only this engine's rows (repeatable)")
    ap.add_argument("--only", action="append", help="only the row of this name (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    ap.add_argument("--check", action="store_true", help="check that every row's text occurs once, run no test")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run (default 600)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run on the unchanged source")
    ap.add_argument("--keep", action="store_true", help="keep each sabotaged copy under the temp folder")
    args = ap.parse_args(argv)
    rows = [r for r in SABOTAGES if (not args.engine or r.engine in args.engine)
            and (not args.only or r.name in args.only)]
    if not rows:
        print("no row matches", file=sys.stderr)
        return 2
    problems = check(rows)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    if args.list or args.check:
        for row in rows:
            print(f"{row.engine:12} {row.name:32} {row.issue:6} {row.file}  <- {' '.join(row.tests)}")
        return 0
    return run(rows, timeout=args.timeout, baseline=not args.no_baseline, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
