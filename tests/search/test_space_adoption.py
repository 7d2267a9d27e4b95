"""A rerun keeps the study's space: fields the run does not name are the study's, so studies
made under other defaults (fewer heads and losses, no channel floor) still resume."""

from __future__ import annotations

import optuna

from bwbpf.reports.record import TrialRecord
from bwbpf.search.study.settings import SearchSettings
from bwbpf.search.study.stored_settings import adopt_space, conflicts
from bwbpf.spaces import SearchSpace
from bwbpf.spaces.declared import before

from .conftest import FAST, Runner

SMALL = [*FAST, "--train-subset", "200", "--val-size", "100", "--pruner", "none",
         "--cost-model", "flops"]


def test_a_rerun_without_space_flags_resumes_the_studys_space(cli: Runner, db: str) -> None:
    argv = ["-q", "run", "--storage", db, "--study", "s", "--no-baselines", *SMALL]
    rc, _, err = cli(*argv, "--heads", "linear,conv", "--losses", "pred", "--no-augment",
                     "--max-memory", "0.9", "--n-trials", "1")
    assert rc == 0, err
    rc, _, err = cli(*argv, "--n-trials", "3")  # today's defaults differ; the study's hold
    assert rc == 0, err
    study = optuna.load_study(study_name="s", storage=db)
    trained = [t for t in study.trials if TrialRecord.of(t).rejected is None]
    assert len(trained) == 3
    for t in study.trials:
        rec = TrialRecord.of(t)
        d = rec.decoupling()
        assert d is not None
        assert {a.family for a in d.aux} <= {"linear", "conv"}
        assert {a.loss for a in d.aux} == {"pred"}
        # the study's constraint holds for the rerun too: a sample above it is rejected
        assert rec.memory_ratio is not None
        assert (rec.rejected is not None) == (rec.memory_ratio > 0.9)
    # A field the run names and the study does not have is still refused.
    rc, _, err = cli(*argv, "--heads", "ir", "--n-trials", "5")
    assert rc == 2 and "created with space.heads=['linear', 'conv']; this run asks " \
        "space.heads=['ir']" in err
    rc, _, err = cli(*argv, "--augment", "--n-trials", "5")
    assert rc == 2 and "created with space.augment=False" in err
    assert len(optuna.load_study(study_name="s", storage=db).trials) == len(study.trials)


def test_a_space_stored_before_a_field_existed_reads_as_it_meant() -> None:
    old_space = SearchSpace(heads=("linear", "conv", "mlp_sr", "ir"), losses=("pred", "predsim"))
    stored = SearchSettings(study="old", storage="sqlite:///x.db", space=old_space).record()
    for field in before(SearchSpace):
        del stored["space"][field]
    new = SearchSettings(study="old", storage="sqlite:///x.db", space_given=frozenset())
    assert conflicts(new, stored)  # today's defaults are another space
    adopted = adopt_space(new, stored)
    assert conflicts(adopted, stored) == []
    assert adopted.space.heads == old_space.heads and adopted.space.losses == old_space.losses
    assert (adopted.space.head_min_channels, adopted.space.pyramid,
            adopted.space.augment) == (0, 0.0, True)  # as the study trained: no floor
    # Named fields are not adopted: their conflict stays.
    named = adopt_space(SearchSettings(study="old", storage="sqlite:///x.db",
                                       space_given=frozenset({"heads"})), stored)
    assert [c[0] for c in conflicts(named, stored)] == ["space.heads"]
    # The API's settings name every field (space_given None): nothing is adopted.
    api = SearchSettings(study="old", storage="sqlite:///x.db")
    assert adopt_space(api, stored) == api
