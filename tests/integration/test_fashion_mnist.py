"""Real data: Fashion-MNIST from the Debian package (installed by `make test` / .ci/run)."""

from __future__ import annotations

import pytest

from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, build
from bwbpf.trainers import TrainPlan, fit, load_data

pytestmark = pytest.mark.integration


def test_one_epoch_bp_free_on_5000_images_beats_70_percent() -> None:
    data = load_data("fashion-mnist", train_subset=5000, val_size=2000, seed=0, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (5000, 2000, 10000)
    d = Decoupling("vgg8b", (2, 4), (AuxSpec("conv", 1, 1.0),) * 2, (BlockOptim(lr=0.05),) * 3,
                   width=0.25)
    net = build(d, data.num_classes, data.in_channels, data.image_size, seed=0)
    result = fit(net, data, TrainPlan(epochs=1, batch_size=64, device="cpu", seed=0))
    print(f"BP-free K=3 val accuracy after one epoch: {result.val_accuracy:.3f}")
    assert result.val_accuracy > 0.70
    assert all(a > 0.5 for a in result.history[-1].block_val_accuracy)
