"""SearchSettings: everything one `bwbpf-search run` is asked to do, validated up front."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bwbpf.search.study.samplers import Pruner, Sampler
from bwbpf.search.study.storage import check_study_name, redact
from bwbpf.spaces import ConfigError, SearchSpace, UserError
from bwbpf.spaces.declared import MAX_SEED as MAX_SEED  # the seed range, for callers
from bwbpf.spaces.declared import check_fields, meta, setting
from bwbpf.spaces.heads import check_schedule
from bwbpf.spaces.limits import DEFAULT_COST_MODEL, CostModel  # the speed-up's source
from bwbpf.trainers import TrainPlan, list_datasets, resolve_device
from bwbpf.trainers.plan import Schedule

DIRECTIONS = {"accuracy": "maximize", "speedup": "maximize", "memory": "minimize"}
TRAIN_EPOCHS = 10  # `train`: a full training (a search trial has SearchSettings.epochs)
REFERENCES = ("paper", "uniform", "predsim", "auglocal", "infopro")


def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise UserError(msg)


def checked_plan(**fields: Any) -> TrainPlan:
    """TrainPlan(**fields), its refusal naming the flag ("--batch-size: 1 must be >= 2 ...")."""
    try:
        return TrainPlan(**fields)
    except ConfigError as e:
        name, _, why = str(e).partition(": ")
        raise UserError(f"--{name.replace('_', '-')}: {why}") from None


DATA, TRIALS, CONSTRAINTS = "data and device", "trials", "constraints"


@dataclass(frozen=True)
class SearchSettings:
    """Everything one run is asked to do. Each field is declared once (spaces.declared): the
    flags, their checks, the stored record, the rerun-conflict check and older studies'
    meanings all come from these declarations."""

    study: str
    storage: str
    space: SearchSpace = field(default_factory=SearchSpace)
    # The data (`train` shares these flags, so a trained winner sees the data its search saw).
    dataset: str = setting("fashion-mnist", flag="--dataset", kind="choice",
                           options=list_datasets, identity=True, group=DATA,
                           help="(default %(default)s)")
    data_dir: str | None = setting(None, flag="--data-dir", kind="path", optional=True,
                                   group=DATA,
                                   help="where the dataset's files are (or are downloaded to)")
    download: bool = setting(True, flag="--no-download", kind="bool", group=DATA,
                             help="never try a torchvision download")
    image_size: int | None = setting(None, flag="--image-size", kind="int>=1", optional=True,
                                     identity=True, group=DATA,
                                     help="resize images once to this square size (default: "
                                          "the set's own; an image folder's most common size, "
                                          "its longer side at most 256)")
    train_subset: int | None = setting(None, flag="--train-subset", kind="int>=1",
                                       optional=True, identity=True, group=DATA,
                                       help="train on this many images (after the validation "
                                            "hold-out)")
    val_size: int | None = setting(None, flag="--val-size", kind="int>=1", optional=True,
                                   identity=True, group=DATA,
                                   help="validation images held out of train (default 10%%)")
    batch_size: int = setting(TrainPlan.batch_size, flag="--batch-size", kind="int>=1",
                              identity=True, group=DATA, help="(default %(default)s)")
    device: str = setting("auto", flag="--device", kind="text", group=DATA,
                          help="cpu, cuda, cuda:N or auto (default %(default)s)")
    schedule: Schedule = setting(
        "sequential", flag="--schedule", kind="choice", group=DATA,
        help="pipelined: one worker per block, concurrently (same arithmetic; default "
             "%(default)s); distributed (train only): one process per group of blocks, "
             "started by torchrun or --nproc")
    devices: tuple[str, ...] = setting(
        (), flag="--devices", kind="names", group=DATA, optional=True,
        help="pipelined: spread the blocks over these devices, e.g. cuda:0,cuda:1")
    compile: bool = setting(False, flag="--compile", kind="bool", group=DATA,
                            help="torch.compile the blocks and heads (pays off on CUDA; the "
                                 "cache is shared by the trials of a process)")
    # Constraints' cost model (the constraints themselves are space fields).
    cost_model: CostModel = setting(
        DEFAULT_COST_MODEL, flag="--cost-model", kind="choice", identity=True, before="flops",
        group=CONSTRAINTS,
        help="the speed-up from step times measured once per study on its device, or from "
             "FLOPs (default %(default)s; both are recorded)")
    # Trials.
    epochs: int = setting(3, flag="--epochs", kind="int>=1", identity=True, group=TRIALS,
                          help="per trial (default %(default)s)")  # the pruners' resource
    n_trials: int = setting(20, flag="--n-trials", kind="int>=1", group=TRIALS,
                            help="the study's total over reruns and workers (default "
                                 "%(default)s)")
    timeout: float | None = setting(None, flag="--timeout", kind="number>0", optional=True,
                                    group=TRIALS, help="seconds")  # for this process
    sampler: Sampler = setting("tpe", flag="--sampler", kind="choice", group=TRIALS,
                               help="(default %(default)s)")
    pruner: Pruner = setting("hyperband", flag="--pruner", kind="choice", group=TRIALS,
                             help="(default %(default)s)")
    min_epochs: int = setting(1, flag="--min-epochs", kind="int>=1", group=TRIALS,
                              help="earliest epoch a trial may be pruned at (default "
                                   "%(default)s)")
    reduction_factor: int = setting(3, flag="--reduction-factor", kind="int>=1",
                                    group=TRIALS, help="(default %(default)s)")
    pruner_startup: int = setting(4, flag="--pruner-startup", kind="int>=0", group=TRIALS,
                                  help="median pruner: finished trials needed before it "
                                       "prunes (default %(default)s)")
    objectives: tuple[str, ...] = setting(
        ("accuracy",), flag="--objectives", kind="names", identity=True, group=TRIALS,
        help="accuracy | accuracy,speedup | accuracy,speedup,memory (default accuracy)")
    baselines: bool = setting(True, flag="--baselines", kind="bool", group=TRIALS,
                              help="queue the reference decouplings first and run the BP "
                                   "learning-rate sweep")
    # Which references (search.run.baselines): the paper's and the uniform decoupling, and the
    # published designs, each at its best feasible placement.
    references: tuple[str, ...] = setting(
        REFERENCES, flag="--references", kind="names", options=lambda: REFERENCES,
        before=("paper", "uniform"), group=TRIALS,
        help="the reference decouplings every study trains: any of " + ", ".join(REFERENCES)
             + " (default: all)")
    # A winner found on another member of the family, carried to this study's net and queued
    # with a few neighbours as its first trials (search.run.warm_start).
    warm_start: str | None = setting(
        None, flag="--warm-start", renamed_from="--seed-from", kind="path", optional=True,
        group=TRIALS, metavar="FILE",
        help="an exported decoupling: carried to this study's backbone and width under its "
             "constraints, and queued with up to 5 neighbours one edit away (a cut moved or "
             "removed, one head family on every block, one head changed) as the first "
             "trials, which are never pruned")
    bp_lrs: tuple[float, ...] = setting(
        (0.02, 0.05, 0.1), flag="--bp-lrs", kind="lrs", group=TRIALS,
        help="the BP baseline's learning-rate sweep (default 0.02,0.05,0.1)")
    heartbeat: int = setting(60, flag="--heartbeat", kind="int>=1", group=TRIALS,
                             help="seconds between a running trial's heartbeats (RDB "
                                  "storages); a trial that misses three is failed and "
                                  "re-queued (default %(default)s)")
    # After the search: the best trials, the reference trials and BP re-trained for this many
    # more seeds (search.run.confirm). Not part of a study's identity: a rerun may ask for more.
    confirm_top: int = setting(3, flag="--confirm-top", kind="int>=0", group=TRIALS,
                               metavar="N",
                               help="after the search, re-train the N best trials, the "
                                    "reference trials and BP for more seeds; they then rank "
                                    "by their mean (0: off; default %(default)s)")
    confirm_seeds: int = setting(2, flag="--confirm-seeds", kind="int>=1", group=TRIALS,
                                 metavar="S",
                                 help="seeds each confirmed config trains beyond the "
                                      "search's own (default %(default)s)")
    # Promotion (search.run.confirm): after the search, the best trials, the references and BP
    # trained at a higher fidelity, which then ranks them and hosts the confirmation seeds.
    promote_top: int = setting(0, flag="--promote-top", kind="int>=0", group=TRIALS,
                               metavar="N",
                               help="after the search, re-train the N best feasible trials, "
                                    "the reference trials and BP at --promote-epochs on "
                                    "--promote-subset images; they then rank first, by that "
                                    "accuracy, and confirmation runs there (0: off; default "
                                    "%(default)s)")
    promote_epochs: int | None = setting(None, flag="--promote-epochs", kind="int>=1",
                                         optional=True, group=TRIALS, metavar="E",
                                         help="epochs of a promoted training (default: 3x "
                                              "--epochs)")
    promote_subset: int | None = setting(None, flag="--promote-subset", kind="int>=1",
                                         optional=True, group=TRIALS, metavar="M",
                                         help="training images of a promoted training "
                                              "(default: --train-subset's)")
    seed: int = setting(0, flag="--seed", kind="seed", identity=True, group=TRIALS,
                        help="data split, initial weights and sampler (default %(default)s)")
    quiet: bool = False
    # The space fields this run names (flags, --space file); a rerun of a study keeps the
    # study's value of every other (see adopt_space). None: all of them (the API's default).
    space_given: frozenset[str] | None = None

    def __post_init__(self) -> None:
        check_study_name(self.study, new=True)
        check_fields(self, self._fail)
        objs = self.objectives
        _require(objs[0] == "accuracy" and len(set(objs)) == len(objs)
                 and all(o in DIRECTIONS for o in objs),
                 f"--objectives {','.join(objs)!r}: accuracy first, then any of speedup, "
                 "memory (e.g. accuracy,speedup)")
        _require(self.min_epochs <= self.epochs,
                 f"--min-epochs {self.min_epochs} exceeds --epochs {self.epochs}")
        _require(self.reduction_factor >= 2, f"--reduction-factor {self.reduction_factor} < 2")
        self._check_promotion()
        _require(not self.devices or self.schedule == "pipelined",
                 "--devices needs --schedule pipelined")
        _require(self.schedule != "distributed",
                 "--schedule distributed trains one network across processes (`train`); a "
                 "search scales out by trials: --jobs, or workers sharing a PostgreSQL storage")
        check_schedule(self.space.heads, self.schedule)
        for d in self.devices:
            resolve_device(d)
        # The trainers' own rules (batch size >= 2, ...) up front: a study is never created
        # for settings whose first trial would be refused.
        checked_plan(epochs=self.epochs, batch_size=self.batch_size, seed=self.seed,
                     device=self.device, schedule=self.schedule, devices=self.devices,
                     compile=self.compile)

    def _check_promotion(self) -> None:
        """A promotion trains more than a trial: no fewer epochs or images, not the same."""
        fid = self.promotion
        if fid is None:
            return
        epochs, images = fid
        _require(epochs >= self.epochs, f"--promote-epochs {epochs} is fewer than --epochs "
                 f"{self.epochs}: a promotion trains more than a trial")
        search = self.train_subset or 0  # 0: all of them
        _require(search == 0 and images == 0 or 0 < search <= images or images == 0,
                 f"--promote-subset {images} is fewer images than the search's "
                 f"{search or 'all'}: a promotion trains more than a trial")
        _require((epochs, images) != (self.epochs, search),
                 "--promote-epochs and --promote-subset give the search's own budget; "
                 "promote to more epochs or more images")

    def _fail(self, name: str, why: str) -> None:
        raise UserError(f"{meta(SearchSettings, name).flag}: {why}")

    @property
    def promotion(self) -> tuple[int, int] | None:
        """The promoted fidelity, (epochs, training images; 0: all), or None when off."""
        if self.promote_top == 0:
            return None
        return (self.promote_epochs or 3 * self.epochs,
                self.promote_subset or self.train_subset or 0)

    @property
    def directions(self) -> list[str]:
        return [DIRECTIONS[o] for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def record(self) -> dict[str, Any]:
        """JSON-able settings, stored with the study (storage password removed)."""
        out = asdict(self)
        del out["space_given"]
        out["space"] = space_record(self.space)
        out["objectives"] = list(self.objectives)
        out["bp_lrs"] = list(self.bp_lrs)
        out["references"] = list(self.references)
        out["devices"] = list(self.devices)
        out["storage"] = redact(self.storage)
        return out


def space_record(space: SearchSpace) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(space).items()}
