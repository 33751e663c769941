"""The shared denoising loop's ``after_step`` hook: called once per scheduler step with the stepped
latents, a ``None`` or unchanged return leaves the run as it was, and a replacement is what the
next step, the progress preview and the result see. A toy model function on a real scheduler."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffcompose.errors import Cancelled  # noqa: E402
from diffcompose.methods.options import SCHEDULERS  # noqa: E402
from diffcompose.models.sampling import denoise, make_scheduler  # noqa: E402
from diffcompose.progress import CancelToken, Progress  # noqa: E402

STEPS = 5
#: SD 1.5's training noise schedule (what the engines' schedulers share).
CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


class ToyModel:
    """A model function that records what it is called with; its prediction depends on x, t and the batch half."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        half = torch.arange(x.shape[0], dtype=x.dtype).view(-1, 1, 1, 1) * 0.05
        return 0.3 * x + 0.001 * float(t) + half


def _run(scheduler: str = "ddim", *, guidance: float = 1.0, eta: float = 0.0, after_step=None, events=None,
         cancel: CancelToken | None = None):
    sched = make_scheduler(scheduler, CONFIG)
    sched.set_timesteps(STEPS)
    model = ToyModel()
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = denoise(model, sched, latents, guidance_scale=guidance, generator=torch.Generator().manual_seed(1),
                  progress=Progress("t", len(sched.timesteps), None if events is None else events.append, cancel),
                  eta=eta, preview=lambda z: z.clone(), after_step=after_step)
    return out, model, sched


@pytest.mark.parametrize("scheduler,guidance,eta", [("ddim", 1.0, 0.0), ("ddim", 4.0, 0.7), ("plms", 4.0, 0.0),
                                                    ("dpm", 1.0, 0.0)])
def test_the_hook_sees_every_step_and_unchanged_latents_change_nothing(scheduler, guidance, eta) -> None:
    plain, plain_model, sched = _run(scheduler, guidance=guidance, eta=eta)
    calls = []

    def same(i, t, latents):
        calls.append((i, int(t), latents.clone()))
        return latents if i % 2 else None  # both ways of keeping the latents

    out, model, _ = _run(scheduler, guidance=guidance, eta=eta, after_step=same)
    assert torch.equal(out, plain)  # bit for bit, seeded scheduler noise (eta > 0) included
    assert [c[0] for c in calls] == list(range(len(sched.timesteps)))
    assert [c[1] for c in calls] == [int(t) for t in sched.timesteps]
    assert len(model.inputs) == len(plain_model.inputs) == len(sched.timesteps)
    assert all(torch.equal(a, b) for a, b in zip(model.inputs, plain_model.inputs))
    assert torch.equal(calls[-1][2], out)  # the hook gets the stepped latents (the last ones are the result)
    if guidance > 1.0:
        assert model.inputs[0].shape[0] == 2  # one [uncond, cond] batch per step


def test_a_replacement_is_what_the_next_step_the_preview_and_the_result_see() -> None:
    plain, _, sched = _run()
    events = []
    replaced = []

    def shrink(i, t, latents):
        replaced.append(latents * 0.5)
        return replaced[-1]

    out, model, _ = _run(after_step=shrink, events=events)
    assert not torch.equal(out, plain)
    assert torch.equal(out, replaced[-1])
    # DDIM's scale_model_input is the identity: each later model call gets the previous replacement
    assert all(torch.equal(x, r) for x, r in zip(model.inputs[1:], replaced[:-1]))
    assert [e.timestep for e in events] == [int(t) for t in sched.timesteps]
    assert all(torch.equal(e.preview(), r) for e, r in zip(events, replaced))


def test_cancel_stops_after_the_hooked_step() -> None:
    token = CancelToken()
    seen = []

    def cancel_at_two(i, t, latents):
        seen.append(i)
        if i == 1:
            token.cancel()

    with pytest.raises(Cancelled):
        _run(after_step=cancel_at_two, cancel=token)
    assert seen == [0, 1]


def test_every_scheduler_the_options_offer_is_built() -> None:
    built = {name: type(make_scheduler(name, CONFIG)).__name__ for name in SCHEDULERS}
    assert built == {"plms": "PNDMScheduler", "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",
                     "dpm": "DPMSolverMultistepScheduler"}
