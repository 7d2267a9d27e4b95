"""A `train` run's settings as a typed record: settings.json is written as it always was, so a
folder made by an earlier version resumes, and --resume names the first setting that differs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bwbpf.search.command_line.parser import UsageError, parse
from bwbpf.search.winners.run_folder import check_out
from bwbpf.search.winners.train_settings import TrainSettings
from bwbpf.spaces import Decoupling, UserError

# settings.json as `train --compare-bp` wrote it before the record was typed (a dict built by
# hand, keys in this order), then the same run distributed over 2 ranks.
WRITTEN = """{"decoupling": %s, "dataset": "fashion_mnist", "epochs": 5, "batch_size": 128,
"seed": 0, "train_subset": 3000, "val_size": 1000, "image_size": null, "compare_bp": true,
"bp_lr": 0.05, "schedule": "sequential", "devices": [], "augment": true,
"lr_schedule": "one_cycle", "cost_model": "measured"}"""
D = Decoupling.paper_default("vgg8b", width=0.25)


def settings(**changed: object) -> TrainSettings:
    base = dict(decoupling=D.to_dict(), dataset="fashion_mnist", epochs=5, batch_size=128,
                seed=0, train_subset=3000, val_size=1000, image_size=None, compare_bp=True,
                bp_lr=0.05, schedule="sequential", devices=(), augment=True,
                lr_schedule="one_cycle", cost_model="measured")
    return TrainSettings(**{**base, **changed})  # type: ignore[arg-type]


def written() -> dict[str, object]:
    return json.loads(WRITTEN % json.dumps(D.to_dict()))


def test_the_record_is_what_earlier_versions_wrote_key_for_key() -> None:
    old = written()
    assert list(settings().record().items()) == list(old.items())
    ranked = settings(schedule="distributed").with_ranks(2, None).record()
    assert list(ranked)[-2:] == ["ranks", "placement"] and ranked["placement"] is None
    assert settings(schedule="distributed").with_ranks(2, (1, 3)).record()["placement"] == [1, 3]
    assert "transferred" not in settings().record()


def test_resume_names_the_first_setting_that_differs(tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text(json.dumps(written()))
    assert check_out(tmp_path, settings(), resume=True, force=False) is True
    # how it was carried and what the speed-up is judged by are not compared
    assert check_out(tmp_path, settings(transferred={"rule": "stages"}, cost_model="flops"),
                     resume=True, force=False) is True
    with pytest.raises(UserError, match="was run with epochs=5, not 6"):
        check_out(tmp_path, settings(epochs=6), resume=True, force=False)
    with pytest.raises(UserError, match="was run with ranks=None, not 2"):
        check_out(tmp_path, settings().with_ranks(2, None), resume=True, force=False)


def test_a_folder_from_before_augment_and_the_schedule_were_recorded_resumes(
        tmp_path: Path) -> None:
    old = written()
    del old["augment"], old["lr_schedule"]  # what those runs meant: augmented, cosine
    (tmp_path / "settings.json").write_text(json.dumps(old))
    assert check_out(tmp_path, settings(lr_schedule="cosine"), resume=True, force=False)
    with pytest.raises(UserError, match="lr_schedule='cosine', not 'one_cycle'"):
        check_out(tmp_path, settings(), resume=True, force=False)
    with pytest.raises(UserError, match="augment=True, not False"):
        check_out(tmp_path, settings(augment=False, lr_schedule="cosine"), resume=True,
                  force=False)


def test_blocks_per_rank_has_one_name_and_the_former_still_works(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["train", "--arch", "a.json", "--schedule", "distributed", "--placement", "2,2"])
    assert args.blocks_per_rank == (2, 2)
    assert capsys.readouterr().err.splitlines() == [
        "bwbpf-search train: --placement is now --blocks-per-rank (the old name still works)"]
    given = parse(["train", "--arch", "a.json", "--blocks-per-rank", "1,3"])
    assert given.blocks_per_rank == (1, 3)
    with pytest.raises(SystemExit):
        parse(["train", "--help"])
    shown = capsys.readouterr().out
    assert "--blocks-per-rank N,N,.." in shown and "--placement" not in shown


@pytest.mark.parametrize("flag, good, bad", [
    ("--seed", "7", "x"), ("--epochs", "4", "0"), ("--width", "0.5", "-1"),
    ("--lr-schedule", "cosine", "linear"), ("--cost-model", "flops", "seconds")])
def test_train_reads_runs_settings_as_run_declares_them(flag: str, good: str, bad: str) -> None:
    """`train`'s flags for `run`'s settings come from the same declarations: a value means
    the same and a bad one is refused with the same words (only the default is train's)."""
    seen = []
    for command in ("run", "train"):
        dest = flag.lstrip("-").replace("-", "_")
        seen.append(getattr(parse([command, flag, good]), dest))
        with pytest.raises(UsageError) as e:
            parse([command, flag, bad])
        seen.append(str(e.value))
    assert seen[0] == seen[2] and seen[1] == seen[3] and bad in seen[1]
