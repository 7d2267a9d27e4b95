from __future__ import annotations

import pytest
import torch

from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, build
from bwbpf.trainers import Data, EpochMetrics, NonFiniteLoss, TrainPlan, evaluate, fit

BPFREE = Decoupling("vgg8b", (2, 4), (AuxSpec("conv", 1, 0.5), AuxSpec("linear")),
                    (BlockOptim(lr=0.05),) * 3, width=0.125)
BP = Decoupling.end_to_end("vgg8b", width=0.125)


@pytest.mark.parametrize("decoupling", [BPFREE, BP], ids=["bp-free", "bp"])
def test_training_lowers_the_loss(decoupling: Decoupling, synthetic: Data) -> None:
    net = build(decoupling, 10, 3, 16, seed=0)
    seen: list[EpochMetrics] = []
    fit(net, synthetic, TrainPlan(epochs=3, batch_size=64, device="cpu"),
        on_epoch=lambda e, m: seen.append(m))
    assert [m.epoch for m in seen] == [1, 2, 3]
    first, last = seen[0].train_loss, seen[-1].train_loss
    assert len(first) == decoupling.num_blocks
    assert all(b < a for a, b in zip(first, last))  # every block's own loss went down
    assert last[-1] < 0.8 * first[-1]
    assert seen[-1].val_accuracy > 0.3  # 10 classes: chance is 0.1
    assert len(seen[-1].block_val_accuracy) == decoupling.num_blocks


def test_same_seed_same_weights_on_cpu(synthetic: Data) -> None:
    plan = TrainPlan(epochs=1, max_steps=4, batch_size=32, device="cpu", seed=5)
    nets = [build(BPFREE, 10, 3, 16, seed=0) for _ in range(2)]
    for n in nets:
        fit(n, synthetic, plan)
    for p, q in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(p, q)
    other = build(BPFREE, 10, 3, 16, seed=0)
    fit(other, synthetic, TrainPlan(epochs=1, max_steps=4, batch_size=32, device="cpu", seed=6))
    assert not torch.equal(other.blocks[0][0][0].weight, nets[0].blocks[0][0][0].weight)


def test_fit_leaves_the_callers_random_stream_as_it_found_it(synthetic: Data) -> None:
    """The training is seeded by its plan whatever the caller drew before, and the caller's
    global generator goes on where it was."""
    plan = TrainPlan(epochs=1, max_steps=2, batch_size=32, device="cpu", seed=5)
    nets = [build(BPFREE, 10, 3, 16, seed=0) for _ in range(2)]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    fit(nets[0], synthetic, plan)
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(7)  # the caller's stream moved on: the next training is the same
    fit(nets[1], synthetic, plan)
    for p, q in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(p, q)


def test_max_steps_and_callback_can_stop(synthetic: Data) -> None:
    net = build(BPFREE, 10, 3, 16, seed=0)
    r = fit(net, synthetic, TrainPlan(epochs=5, max_steps=3, batch_size=32, device="cpu"))
    assert r.steps == 3 and len(r.history) == 1

    class Stop(Exception):
        pass

    def stop_at_2(epoch: int, m: EpochMetrics) -> None:
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(build(BPFREE, 10, 3, 16, seed=0), synthetic,
            TrainPlan(epochs=4, batch_size=256, device="cpu"), on_epoch=stop_at_2)


def test_non_finite_loss_fails_with_the_block(synthetic: Data) -> None:
    net = build(BPFREE, 10, 3, 16, seed=0)
    with torch.no_grad():
        net.aux_heads[1].logits[-1].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLoss, match="block 2 loss is not finite"):
        fit(net, synthetic, TrainPlan(epochs=1, max_steps=5, batch_size=32, device="cpu"))


def test_evaluate_reports_every_head(synthetic: Data) -> None:
    net = build(BPFREE, 10, 3, 16, seed=0)
    accs = evaluate(net, synthetic.val, TrainPlan(device="cpu"))
    assert len(accs) == 3 and all(0.0 <= a <= 1.0 for a in accs)
    logits = net.eval()(synthetic.val.x)
    assert accs[-1] == pytest.approx((logits.argmax(1) == synthetic.val.y).float().mean().item())


def test_plan_validation() -> None:
    from bwbpf.spaces import ConfigError

    for kw, msg in [({"epochs": 0}, "epochs"), ({"batch_size": 1}, "batch_size"),
                    ({"warmup_fraction": 1.5}, "warmup_fraction"), ({"schedule": "x"}, "schedule")]:
        with pytest.raises(ConfigError, match=msg):
            TrainPlan(**kw)


def test_cpu_training_runs_in_channels_last_with_the_same_values(synthetic: Data) -> None:
    net = build(BPFREE, 10, 3, 16, seed=0)
    fit(net, synthetic, TrainPlan(epochs=1, max_steps=2, batch_size=32, device="cpu"))
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)
             and m.weight.shape[1] > 1 and m.weight.shape[2] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last)
                         and not w.is_contiguous() for w in convs)
    # the layout is memory order only: an NCHW copy of the net computes the same outputs
    nchw = build(BPFREE, 10, 3, 16, seed=0)
    nchw.load_state_dict(net.state_dict())
    plan = TrainPlan(epochs=1, batch_size=32, device="cpu")
    assert evaluate(nchw.to(memory_format=torch.contiguous_format), synthetic.val, plan) \
        == pytest.approx(evaluate(net, synthetic.val, plan), abs=1.0 / len(synthetic.val))
