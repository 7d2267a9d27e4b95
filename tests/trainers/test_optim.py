from __future__ import annotations

import pytest
import torch

from bwbpf.spaces import ConfigError
from bwbpf.trainers import TrainPlan
from bwbpf.trainers.optim import make_schedule, one_cycle, warmup_cosine


def test_one_cycle_shape() -> None:
    total = 200
    f = [one_cycle(total)(s) for s in range(total)]
    assert f[0] == pytest.approx(1 / 25)
    peak = max(range(total), key=f.__getitem__)
    assert peak == pytest.approx(0.3 * total, abs=1) and f[peak] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:peak], f[1:peak + 1]))  # up, then down
    assert all(a >= b for a, b in zip(f[peak:], f[peak + 1:]))
    assert f[-1] < 1e-4


@pytest.mark.parametrize("total", [1, 3, 10, 157])
def test_one_cycle_is_torchs_one_cycle(total: int) -> None:
    lr = 0.1
    ours = make_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr), total,
                         0.05, "onecycle")
    ref = torch.optim.lr_scheduler.OneCycleLR(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr), lr, total_steps=total)
    for _ in range(total):
        assert ours.get_last_lr()[0] == pytest.approx(ref.get_last_lr()[0], rel=1e-9, abs=1e-12)
        for s in (ours, ref):
            s.optimizer.step()
            if s.last_epoch + 1 < total:  # OneCycleLR refuses a step past its total
                s.step()


def test_cosine_is_still_the_default() -> None:
    assert TrainPlan().lr_schedule == "cosine"
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert make_schedule(opt, 100, 0.05).lr_lambdas[0](37) == warmup_cosine(100, 0.05)(37)


def test_bad_lr_schedule_is_refused() -> None:
    with pytest.raises(ConfigError, match="lr_schedule"):
        TrainPlan(lr_schedule="linear")  # type: ignore[arg-type]
