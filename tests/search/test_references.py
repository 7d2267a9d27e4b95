"""The published designs as reference trials: PredSim, AugLocal and InfoPro, each at its best
feasible placement, marked, summarised and never enqueued twice."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from bwbpf.reports.record import TrialRecord
from bwbpf.search.run import baselines
from bwbpf.search.run.baselines import PUBLISHED, published
from bwbpf.search.trial.constraints import meets, of_space
from bwbpf.search.trial.placement import Placer
from bwbpf.search.trial.reach import cut_sets
from bwbpf.spaces import SearchSpace, reference_decouplings

from .conftest import FAST, Runner

SHAPE = {"in_channels": 3, "image_size": (16, 16), "num_classes": 10}
ALL = ["--references", "paper,uniform,predsim,auglocal,infopro"]


def test_each_design_sits_at_its_best_feasible_cut_set() -> None:
    space = SearchSpace(min_speedup=2.0, max_memory=0.6)
    rules = of_space(space)
    placer = Placer(space, rules, **SHAPE)  # type: ignore[arg-type]
    p = placer.pieces("vgg8b")
    refs = published(space, placer)
    assert set(refs) == set(PUBLISHED)
    for name, d in refs.items():
        design = PUBLISHED[name]
        family, loss = design.family, design.loss
        if {a.loss for a in d.aux} == {design.lighter_loss}:
            # the lighter loss only where the design's own fits no cut set, even at its
            # lightest head (depth 1, the narrowest width)
            own = baselines._design(space, reference_decouplings(space)["paper"], family,
                                    design.loss, 1, min(space.head_widths), design.pyramid)
            assert placer.best(own, range(space.min_blocks, space.max_blocks + 1)) is None
            loss = design.lighter_loss
        assert {(a.family, a.loss) for a in d.aux} == {(family, loss)}
        r = p.of(d)
        # every other cut set of any K with the same design: none feasible is faster
        others = []
        for k in range(2, 5):
            for cuts in cut_sets(p.units, k, 1):
                aux = tuple(d.aux[0] for _ in cuts)
                if family == "downstream":
                    continue  # its depth follows the cut (clipped, pyramid): checked below
                o = p.costs(cuts, aux)
                if meets(rules, o):
                    others.append(o.speedup)
        if meets(rules, r):
            assert not others or r.speedup >= max(others) - 1e-9
        else:
            assert not others  # only where no placement meets the constraints
    auglocal = refs["auglocal"]
    depths = [a.depth for a in auglocal.aux]
    assert depths == sorted(depths, reverse=True)  # AugLocal's pyramid


def test_predsim_falls_back_to_its_prediction_loss_where_the_similarity_term_fits_nowhere(
        ) -> None:
    """vgg8b x0.25 on 28x28 grey images at >= 2x and <= 0.6: no cut set takes PredSim's
    similarity loss, and its pooled linear head with the prediction loss alone fits; on
    ResNet-18 the design as published fits and is kept."""
    shape = {"in_channels": 1, "image_size": (28, 28), "num_classes": 10}
    for backbone, loss in (("vgg8b", "pred"), ("resnet18", "predsim")):
        space = SearchSpace(backbones=(backbone,), width=0.25, min_speedup=2.0,
                            max_memory=0.6)
        placer = Placer(space, of_space(space), **shape)  # type: ignore[arg-type]
        d = published(space, placer, ["predsim"])["predsim"]
        assert {(a.family, a.loss) for a in d.aux} == {("pool_linear", loss)}, backbone
        assert meets(of_space(space), placer.pieces(backbone).of(d))
    # a space without the lighter loss keeps the design as published, marked infeasible
    space = SearchSpace(backbones=("vgg8b",), width=0.25, min_speedup=2.0, max_memory=0.6,
                        losses=("predsim", "infopro"))
    placer = Placer(space, of_space(space), **shape)  # type: ignore[arg-type]
    d = published(space, placer, ["predsim"])["predsim"]
    assert {a.loss for a in d.aux} == {"predsim"}
    assert not meets(of_space(space), placer.pieces("vgg8b").of(d))


def test_a_study_trains_every_reference_once_and_says_which_the_best_beats(
        cli: Runner, db: str) -> None:
    argv = ["run", "--storage", db, "--study", "refs", "--n-trials", "6", "--pruner", "none",
            "--min-speedup", "2", "--max-memory", "0.6", "--cost-model", "flops", *FAST,
            "--epochs", "1", "--train-subset", "128", "--val-size", "64", *ALL]
    rc, out, err = cli(*argv)
    assert rc == 0, err
    study = optuna.load_study(study_name="refs", storage=db)
    refs = {TrialRecord.of(t).baseline: t for t in study.trials if TrialRecord.of(t).baseline}
    assert set(refs) == {"paper", "uniform", "predsim", "auglocal", "infopro"}
    for name, t in refs.items():
        rec = TrialRecord.of(t)
        assert t.state == TrialState.COMPLETE and rec.curve
        feasible = rec.speedup is not None and rec.memory_ratio is not None and (
            round(rec.speedup, 4) >= 2 and round(rec.memory_ratio, 4) <= 0.6)
        assert feasible == (rec.infeasible is None), (name, rec)
        for label in ("predsim", "auglocal", "infopro"):
            assert f"\n{label:8s} trial {refs[label].number}: val " in out
    assert "against the references: the best " in out or "the best is a reference: " in out
    # a rerun with a larger budget enqueues none of them again
    rc, _, err = cli("-q", *argv[:6], "7", *argv[7:])
    assert rc == 0, err
    again = [TrialRecord.of(t).baseline for t in optuna.load_study(
        study_name="refs", storage=db).trials]
    assert sorted(b for b in again if b) == sorted(refs)


def test_references_train_in_full_where_the_pruner_stops_others(cli: Runner, db: str) -> None:
    base = ["-q", "run", "--storage", db, "--study", "p", *FAST, "--epochs", "2",
            "--train-subset", "128", "--val-size", "64", "--pruner", "median",
            "--pruner-startup", "0", "--min-epochs", "1", "--references", "paper,uniform"]
    rc, _, err = cli(*base, "--n-trials", "1")  # the references are queued; the first runs
    assert rc == 0, err
    # finished trials no other can match at epoch 1, more of them than the trials to come: the
    # median stays 1.0, so the median pruner stops every later trial there, unless a reference
    study = optuna.load_study(study_name="p", storage=db)
    for _ in range(20):
        study.add_trial(optuna.trial.create_trial(value=1.0,
                                                  intermediate_values={1: 1.0, 2: 1.0}))
    before = {t.number for t in study.get_trials()}
    rc, _, err = cli(*base, "--n-trials", "24")
    assert rc == 0, err
    trials = optuna.load_study(study_name="p", storage=db).get_trials()
    refs = [t for t in trials if TrialRecord.of(t).baseline]
    others = [t for t in trials if t.number not in before and not TrialRecord.of(t).baseline]
    assert len(refs) == 2 and all(t.state == TrialState.COMPLETE for t in refs)
    assert all(len(TrialRecord.of(t).curve) == 2 for t in refs)
    assert others and all(t.state == TrialState.PRUNED for t in others)


def test_the_reference_line_says_whether_the_gap_is_outside_the_seeds_noise() -> None:
    from bwbpf.reports.seed_record import Confirmation
    from bwbpf.reports.standing import SummaryRow
    from bwbpf.search.run.summary import noise, versus_references

    def row(label: str, trial: int, accs: tuple[float, ...]) -> SummaryRow:
        c = Confirmation(trial, tuple(range(len(accs))), accs, (6, 3000))
        return SummaryRow(label, trial, c.mean, 2.0, "", accs[0], c)

    tight = [row("best", 7, (0.870, 0.871)), row("paper", 1, (0.840, 0.841))]
    [line] = versus_references(tight)
    assert "beats the strongest feasible reference, paper (trial 1), by +0.0300" in line
    assert "outside the seeds' noise" in line
    loose = [row("best", 7, (0.880, 0.852)), row("paper", 1, (0.872, 0.850))]
    [line] = versus_references(loose)
    assert "by +0.0050" in line and "within the seeds' noise" in line
    # two standard errors of the difference of two 2-seed means: sqrt(s1^2/2 + s2^2/2) * 2
    two_se = float(line.split("2 standard errors ")[1].split(";")[0])
    assert abs(two_se - 2 * ((0.028 ** 2 / 2 / 2 + 0.022 ** 2 / 2 / 2) ** 0.5)) < 1e-4
    # one seed, or different fidelities: no claim either way
    one = Confirmation(1, (0,), (0.84,), (6, 3000))
    assert noise(0.03, tight[0].confirmed, one) == ""
    other = Confirmation(1, (0, 1), (0.84, 0.85), None)
    assert noise(0.03, tight[0].confirmed, other) == ""
