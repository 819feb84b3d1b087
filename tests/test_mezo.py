"""MeZO (zeroth-order training): one step checked by hand on a quadratic, where the two-point slope is
exact; the real trainer stores no gradient and no optimizer state."""

from __future__ import annotations

import pytest
import torch

from pipelines.methods.mezo import perturb, zo_step


def test_one_step_moves_along_z_by_the_measured_slope():
    """L(theta) = 1/2 |theta|^2 at theta = (1, 2) and (3,): along z the two-point slope of a quadratic is
    exactly theta . z, so the step is theta - lr (theta . z) z."""
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0])
    params = [a, b]

    def loss():
        return 0.5 * sum((p.double() ** 2).sum() for p in params)

    gen = torch.Generator().manual_seed(7)  # the z the step draws from seed 7, parameter by parameter
    z = [torch.randn(2, generator=gen), torch.randn(1, generator=gen)]
    slope = float((torch.tensor([1.0, 2.0]) * z[0]).sum() + 3.0 * z[1][0])
    plus, minus = zo_step(params, loss, seed=7, eps=1e-2, lr=0.1)

    theta = torch.tensor([1.0, 2.0, 3.0]) + 1e-2 * torch.cat(z)
    assert plus == pytest.approx(0.5 * float((theta.double() ** 2).sum()), rel=1e-6)
    assert (plus - minus) / 2e-2 == pytest.approx(slope, rel=1e-4)
    torch.testing.assert_close(a, torch.tensor([1.0, 2.0]) - 0.1 * slope * z[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b, torch.tensor([3.0]) - 0.1 * slope * z[1], rtol=1e-5, atol=1e-6)


def test_perturb_is_undone_by_the_opposite_nudge():
    w = torch.randn(3, 4)
    before = w.clone()
    perturb([w], seed=3, scale=0.5)
    assert not torch.equal(w, before)
    perturb([w], seed=3, scale=-0.5)
    torch.testing.assert_close(w, before)


def test_a_mezo_run_keeps_no_gradient_and_no_optimizer_state(studio, tiny_model_dir):
    from pipelines.events import JOB, RunEvents, read_json
    from pipelines.train_sft import build_trainer

    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="mezo",
                              params={"num_train_epochs": 0.2, "max_length": 64, "learning_rate": 1e-3,
                                      "eval_fraction": 0})
    row = studio.wait(run_id)
    assert row["status"] == "completed", row["error"]
    run_dir = studio.run_dir(run_id)
    trainer, _ = build_trainer(read_json(run_dir / JOB), run_dir, RunEvents(run_dir))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.args.max_steps = 2
    trainer.train()
    assert all(p.grad is None for p in trainer.model.parameters())  # no backward pass ever ran
    assert len(trainer.optimizer.state) == 0  # AdamW never saw a gradient: no moments
    moved = [not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters())]
    assert all(moved)  # every weight stepped along its random direction
