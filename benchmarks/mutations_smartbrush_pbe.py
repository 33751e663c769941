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
]
