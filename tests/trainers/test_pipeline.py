"""The pipelined schedule: concurrent blocks, the sequential schedule's arithmetic."""

from __future__ import annotations

import threading
from typing import Iterator

import pytest
import torch
from torch import nn

from bwbpf.search.cli import main
from bwbpf.spaces import AuxSpec, BlockOptim, Decoupling, build
from bwbpf.trainers import Data, NonFiniteLoss, TrainPlan, fit
from bwbpf.trainers.pipeline import PipelinedStepper

CASES = [Decoupling.uniform("vgg8b", k=2, width=0.125),
         Decoupling.uniform("vgg8b", k=4, width=0.125),
         Decoupling("resnet18", (2, 5), (AuxSpec("conv", 1, 0.5), AuxSpec("ir", 2, 1.0)),
                    (BlockOptim(lr=0.1), BlockOptim(lr=0.05), BlockOptim(optimizer="adamw",
                                                                          lr=1e-3)), 0.125),
         # the input images travel with the batch to the blocks that rebuild them
         Decoupling("resnet18", (3, 6), (AuxSpec("downstream", 2, 0.5, "infopro", 8),
                                         AuxSpec("linear", loss="infopro")),
                    (BlockOptim(),) * 3, 0.125)]


def trained(d: Decoupling, data: Data, schedule: str) -> nn.Module:
    net = build(d, 10, 3, 16, seed=0)
    fit(net, data, TrainPlan(epochs=2, max_steps=12, batch_size=64, device="cpu",
                             schedule=schedule, worker_threads=1))  # type: ignore[arg-type]
    return net


def workers_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("block-")]


@pytest.mark.parametrize("d", CASES, ids=["vgg-K2", "vgg-K4", "resnet-K3", "infopro-K3"])
def test_pipelined_equals_sequential_bit_for_bit(d: Decoupling, synthetic: Data) -> None:
    a = trained(d, synthetic, "sequential").state_dict()
    b = trained(d, synthetic, "pipelined").state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # weights, BN statistics, step counts
    assert workers_alive() == []


def test_a_failing_worker_stops_the_pipeline(synthetic: Data) -> None:
    net = build(CASES[1], 10, 3, 16, seed=0)
    with torch.no_grad():
        net.aux_heads[1].logits[-1].weight.fill_(float("nan"))  # block 2's loss turns NaN
    plan = TrainPlan(epochs=1, batch_size=32, device="cpu", schedule="pipelined",
                     check_every=2)
    with pytest.raises(NonFiniteLoss, match="block 2 loss is not finite"):
        fit(net, synthetic, plan)
    assert workers_alive() == []


def test_an_exception_in_one_block_reaches_the_caller(synthetic: Data) -> None:
    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom in block 3")

    net = build(CASES[1], 10, 3, 16, seed=0)
    net.blocks[2].append(Boom())
    with pytest.raises(RuntimeError, match="boom in block 3"):
        fit(net, synthetic, TrainPlan(epochs=1, batch_size=32, device="cpu",
                                      schedule="pipelined"))
    assert workers_alive() == []


class FeedFailed(Exception):
    pass


@pytest.mark.parametrize("error", [FeedFailed("augmentation failed"), KeyboardInterrupt()],
                         ids=["exception", "ctrl-c"])
def test_an_error_in_the_feed_stops_the_workers_and_reaches_the_caller(
        error: BaseException) -> None:
    net = build(CASES[1], 10, 3, 16, seed=0)
    step = PipelinedStepper(net, TrainPlan(device="cpu", schedule="pipelined",
                                           worker_threads=1), total_steps=10)
    g = torch.Generator().manual_seed(0)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(3):
            yield torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
        raise error  # e.g. the augmentation runs out of memory, or Ctrl-C

    raised: list[BaseException] = []

    def epoch() -> None:
        try:
            step.run_epoch(batches(), limit=10, epoch=1, done=0)
        except BaseException as e:  # the test's own thread: keep it for the main thread
            raised.append(e)

    caller = threading.Thread(target=epoch, daemon=True)
    caller.start()
    caller.join(timeout=20)  # an epoch of 3 tiny batches takes well under a second
    assert not caller.is_alive(), "run_epoch hangs after the feed failed"
    assert raised == [error]
    assert workers_alive() == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--schedule", "pipelined", "--devices", "cuda:5"], "--device cuda:5"),
    (["--devices", "cpu"], "--devices needs --schedule pipelined"),
    (["--schedule", "pipelined", "--devices", "tpu:0"], "--device 'tpu:0'"),
])
def test_bad_devices(argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
                     tmp_path) -> None:  # type: ignore[no-untyped-def]
    rc = main(["run", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--dataset", "synthetic",
               *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "s.db").exists()


@pytest.mark.integration
def test_compiled_blocks_train_and_keep_their_state_dict_keys(synthetic: Data) -> None:
    d = CASES[0]
    plain, compiled = build(d, 10, 3, 16, seed=0), build(d, 10, 3, 16, seed=0)
    plan = TrainPlan(epochs=1, max_steps=2, batch_size=64, device="cpu")
    fit(plain, synthetic, plan)
    fit(compiled, synthetic, TrainPlan(epochs=1, max_steps=2, batch_size=64, device="cpu",
                                       compile=True))
    a, b = plain.state_dict(), compiled.state_dict()
    assert a.keys() == b.keys()  # checkpoints stay loadable either way
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)
