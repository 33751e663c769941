"""Sabotages of SmartBrush's and Paint-by-Example's method parts (issue 21, items 2, 3, 9, 10), as data
for the mutation runner: each one, applied alone, must make at least one of its tests fail."""

SB = "tests/test_smartbrush_fidelity.py"
SB_OLD = "tests/test_smartbrush.py"
PBE = "tests/test_pbe_fidelity.py"

MUTATIONS = [
    # item 2a: the precision level reaching the UNet
    dict(name="smartbrush-level-ignored", path="src/diffcompose/methods/smartbrush/engine.py",
         old="labels = torch.full((context.shape[0],), level,",
         new="labels = torch.full((context.shape[0],), 0,",
         tests=[f"{SB}::test_the_requested_precision_level_reaches_the_unet_and_changes_the_output"]),
    dict(name="smartbrush-level-always-box", path="src/diffcompose/methods/smartbrush/engine.py",
         old="labels = torch.full((context.shape[0],), level,",
         new="labels = torch.full((context.shape[0],), self.levels,",
         tests=[f"{SB}::test_the_requested_precision_level_reaches_the_unet_and_changes_the_output"]),
    # item 2b: the per-step blend with the predicted mask
    dict(name="smartbrush-no-step-blend", path="src/diffcompose/methods/smartbrush/engine.py",
         old="return latents * keep_new + self.z0 * (1 - keep_new)",
         new="return latents",
         tests=[f"{SB}::test_each_step_keeps_the_new_latents_only_inside_the_predicted_mask"]),
    dict(name="smartbrush-blend-with-user-mask", path="src/diffcompose/methods/smartbrush/engine.py",
         old="keep_new = blend_region(self.prob, self.user, self.options.mask_threshold, self.cells)",
         new="keep_new = (self.user > 0.5).float()",
         tests=[f"{SB}::test_each_step_keeps_the_new_latents_only_inside_the_predicted_mask"]),
    dict(name="smartbrush-blend-uncond-logit", path="src/diffcompose/methods/smartbrush/engine.py",
         old="self.logit = logit.chunk(2)[1] if self.guided else logit",
         new="self.logit = logit.chunk(2)[0] if self.guided else logit",
         tests=[f"{SB_OLD}::test_the_mask_blend_keeps_the_conditional_logit_and_restores_the_background_outside_it"]),
    # item 3: Paint-by-Example's condition dropout, on the real modules
    dict(name="pbe-dropout-flag-disconnected", path="src/diffcompose/methods/pbe/train_model.py",
         old="ctx = torch.where(drop[:, None, None], self.encoder.uncond_vector.to(ctx.dtype).expand_as(ctx), ctx)",
         new="ctx = ctx",
         tests=[f"{PBE}::test_a_dropped_sample_is_conditioned_on_the_unconditional_vector",
                f"{PBE}::test_the_dropout_flag_decides_which_condition_is_trained",
                f"{PBE}::test_the_training_loss_trains_the_unconditional_vector_when_it_drops"]),
    dict(name="pbe-dropout-never-drawn", path="src/diffcompose/methods/pbe/train.py",
         old="drop = condition_dropout(n, cond_dropout, cond_dropout_per, gen).to(z.device)",
         new="drop = torch.zeros(n, dtype=torch.bool, device=z.device)",
         tests=[f"{PBE}::test_the_training_loss_trains_the_unconditional_vector_when_it_drops"]),
    dict(name="pbe-uncond-vector-not-optimised", path="src/diffcompose/methods/pbe/train_model.py",
         old='for n, p in model.named_parameters() if not n.startswith("encoder.model.")]',
         new='for n, p in model.named_parameters() if not n.startswith(("encoder.model.", "encoder.uncond"))]',
         tests=[f"{PBE}::test_the_training_loss_trains_the_unconditional_vector_when_it_drops"]),
    dict(name="pbe-unguided-half-gets-the-reference", path="src/diffcompose/methods/pbe/engine.py",
         old="context = torch.cat([c.encoder.uncond(n).to(dt), cond]) if guided else cond",
         new="context = torch.cat([cond, cond]) if guided else cond",
         tests=[f"{PBE}::test_inference_guides_against_the_learned_unconditional_vector"]),
]
