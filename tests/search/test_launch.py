"""The one launcher (search.command_line.launch): a command written again for another process
parses to the same settings, whatever the user typed (abbreviations, a former name, `=`)."""

from __future__ import annotations

import argparse

import pytest

from bwbpf.search.command_line.commands import worker_launch
from bwbpf.search.command_line.launch import PROGRAM, flags, relaunch
from bwbpf.search.command_line.parser import parse

RUN = ["run", "--sto", "sqlite:///x.db", "--study=s", "--backbone", "vgg8b,resnet18",
       "--width", "0.125", "--heads", "linear,conv", "--min-blocks=3", "--augment",
       "--no-baselines", "--bp-lrs", "0.05,0.1", "--seed-from", "w.json", "--min-speedup",
       "1.5", "--cost-model", "flops", "--epochs", "2", "--n-tri", "5", "--sampler", "random",
       "--device", "cpu", "--train-subset", "400", "--jobs", "2",
       "--data-dir", "my data/../x y", "--study", "a b/../c"]
TRAIN = ["-q", "train", "--arch", "best.json", "--backbone", "vgg16", "--no-augment",
         "--lr-schedule", "cosine", "--epochs=4", "--seed", "3", "--compare-bp", "--bp-lr",
         "0.03", "--schedule", "distributed", "--nproc", "2", "--placement", "2,2",
         "--out", "runs/x", "--resume", "--stop-after", "1", "--ignore-constraints"]


def settings(args: argparse.Namespace, *leave_out: str) -> dict[str, object]:
    return {k: v for k, v in vars(args).items() if k not in leave_out}


@pytest.mark.parametrize("argv", [RUN, TRAIN, ["run"], ["train"]], ids=["run", "train",
                                                                      "run-bare", "train-bare"])
def test_a_relaunched_command_parses_to_the_same_settings(argv: list[str]) -> None:
    args = parse(argv)
    again = relaunch(args)
    assert again[:len(PROGRAM)] == list(PROGRAM)
    assert settings(parse(again[len(PROGRAM):])) == settings(args)
    # each setting left out is left out whatever it was typed as
    rest = flags(args, leave_out=("storage", "warm_start", "blocks_per_rank"))
    assert not [f for f in rest if f.startswith(("--storage", "--warm-start", "--seed-from",
                                                 "--blocks-per-rank", "--placement"))]


def test_a_worker_is_the_same_run_less_what_its_parent_did(capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    args = parse(RUN)
    capsys.readouterr()  # the former name's one line
    cmd, env = worker_launch(args, 1)
    worker = parse(cmd[len(PROGRAM):])
    assert env["BWBPF_STORAGE"] == "sqlite:///x.db"
    assert (worker.worker, worker.jobs, worker.warm_start, worker.baselines) == (1, 1, None, False)
    assert (worker.confirm_top, worker.promote_top) == (0, 0)
    same = settings(worker, "storage", "warm_start", "jobs", "worker", "threads", "confirm_top",
                    "promote_top", "quiet")
    assert same == settings(args, "storage", "warm_start", "jobs", "worker", "threads",
                            "confirm_top", "promote_top", "quiet")
    assert capsys.readouterr().err == ""  # the worker is given the new name only


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://me:s3cret@db/x", "postgresql+psycopg://me:s3@cret@db/x",
    "postgresql+psycopg://me@db/x?password=s3cret", "postgresql+psycopg://me:s3%40cret@db/x"])
def test_a_worker_is_never_given_the_storage_url_in_its_argv(url: str) -> None:
    for given in (["--storage", url], [f"--storage={url}"], ["--stor", url]):
        cmd, env = worker_launch(parse(["run", *given, "--jobs", "2"]), 0)
        assert env["BWBPF_STORAGE"] == url
        assert not [a for a in cmd if "s3" in a or "db/x" in a], cmd
