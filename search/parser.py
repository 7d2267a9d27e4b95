"""The `bwbpf-search` command line: one subparser per subcommand, each flag's type from
``search.argtypes`` and its default from the library's settings, so the help text and the
code's default come from one place. ``parse`` turns an argv into the namespace that
``search.commands`` reads; a bad flag is a ``UsageError`` (one line)."""

from __future__ import annotations

import argparse
import os
from typing import NoReturn, get_args

from bwbpf.search import argtypes as at
from bwbpf.search import commands
from bwbpf.search.settings import TRAIN_EPOCHS, CostModel, SearchSettings
from bwbpf.search.study import Pruner, Sampler, package_version
from bwbpf.spaces import BlockOptim, SearchSpace, UserError, list_backbones
from bwbpf.spaces.space import LR_SCHEDULES
from bwbpf.trainers import list_datasets
from bwbpf.trainers.plan import Schedule


class UsageError(UserError):
    """A bad command line; main prints it as `PROG: error: MESSAGE`, PROG naming the
    subcommand (`bwbpf-search run`)."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line (a UserError), not usage + error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


def add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and device")
    # The search's defaults (SearchSettings); `train` shares them, so a trained winner sees
    # the data its search saw.
    g.add_argument("--dataset", default=SearchSettings.dataset, choices=list_datasets(),
                   help="(default %(default)s)")
    g.add_argument("--data-dir", type=at.path, default=None,
                   help="where the dataset's files are (or are downloaded to)")
    g.add_argument("--no-download", dest="download", action="store_false",
                   help="never try a torchvision download")
    g.add_argument("--image-size", type=at.positive_int, default=None,
                   help="resize images once to this square size (default: native)")
    g.add_argument("--train-subset", type=at.positive_int, default=None,
                   help="train on this many images (after the validation hold-out)")
    g.add_argument("--val-size", type=at.positive_int, default=None,
                   help="validation images held out of train (default 10%%)")
    g.add_argument("--batch-size", type=at.positive_int, default=SearchSettings.batch_size,
                   help="(default %(default)s)")
    g.add_argument("--device", default=SearchSettings.device,
                   help="cpu, cuda, cuda:N or auto (default %(default)s)")
    g.add_argument("--threads", type=at.up_to_cores, default=None,
                   help="CPU threads for torch, at most the machine's cores (default: torch's "
                        "choice)")
    g.add_argument("--schedule", default=SearchSettings.schedule, choices=get_args(Schedule),
                   help="pipelined: one worker per block, concurrently (same arithmetic; "
                        "default %(default)s); distributed (train only): one process per group "
                        "of blocks, started by torchrun or --nproc")
    g.add_argument("--devices", type=at.csv(str), default=(),
                   help="pipelined: spread the blocks over these devices, e.g. cuda:0,cuda:1")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the blocks and heads (pays off on CUDA; the cache is "
                        "shared by the trials of a process)")


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="full training of one decoupling")
    p.add_argument("--arch", default="paper",
                   help="paper, uniform, or an exported JSON file (transferred to --backbone "
                        "and --width when they differ from the file's)")
    p.add_argument("--backbone", default=None, choices=list_backbones(),
                   help=f"backbone (default {SearchSpace.backbones[0]} for paper/uniform; the "
                        "file's otherwise)")
    p.add_argument("--width", type=at.positive_float, default=None,
                   help=f"channel multiplier (default {SearchSpace.width} for paper/uniform; "
                        "the file's)")
    p.add_argument("--seed", type=at.seed, default=0, help="(default %(default)s)")
    p.add_argument("--epochs", type=at.positive_int, default=TRAIN_EPOCHS,
                   help="(default %(default)s)")
    add_data_flags(p)
    p.add_argument("--lr", type=at.positive_float, default=BlockOptim.lr,
                   help="learning rate of the built-in decouplings")
    p.add_argument("--bp-lr", type=at.positive_float, default=None,
                   help="learning rate of the BP baseline (default: the study's BP sweep "
                        "winner recorded in the file, else --lr)")
    p.add_argument("--compare-bp", action="store_true",
                   help="also train end-to-end BP on the same backbone and budget")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop and flip of training batches, for both (default: on)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                   help="warm-up + cosine, or one-cycle (default: as the file's search trained "
                        "it; the built-ins: " + SearchSpace.lr_schedule + ")")
    p.add_argument("--out", type=at.path, default=None,
                   help="results folder (not '-': results are files)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--stop-after", type=at.positive_int, default=None,
                   help="stop after this epoch (resume later with --resume)")
    p.add_argument("--force", action="store_true", help="replace an earlier run in --out")
    g = p.add_argument_group("distributed (--schedule distributed)")
    g.add_argument("--nproc", type=at.positive_int, default=None, metavar="K",
                   help="start K ranks on this machine (else launch with torchrun)")
    g.add_argument("--placement", type=at.csv(at.positive_int), default=None, metavar="N,N,..",
                   help="blocks per rank, in order (default: balanced by the blocks' FLOPs)")
    g.add_argument("--peer-timeout", type=at.positive_float, default=300.0, metavar="S",
                   help="seconds a rank waits for another before the run stops "
                        "(default %(default)s)")
    p.set_defaults(func=commands.cmd_train)


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write winning decouplings as versioned JSON")
    add_study_flags(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, default=None, help="this trial number")
    which.add_argument("--pareto", action="store_true", help="the Pareto set (into a folder)")
    which.add_argument("--top", type=at.positive_int, default=None, help="the K most accurate")
    p.add_argument("-o", "--output", type=at.path, required=True,
                   help="file, or folder (files named <study>-trial<N>.json, the study name "
                        "made a safe file name); not '-': outputs are files, never stdout")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=commands.cmd_export)


DEFAULT_STORAGE = "sqlite:///study.db"


def add_study_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=os.environ.get("BWBPF_STORAGE", DEFAULT_STORAGE),
                   help=f"sqlite:///FILE (default {DEFAULT_STORAGE}, env BWBPF_STORAGE), "
                        "postgresql+psycopg://USER:PW@HOST/DB, or journal:FILE")
    p.add_argument("--study", default="bwbpf", help="study name (default %(default)s)")


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="search decouplings (the main job)")
    add_study_flags(p)
    g = p.add_argument_group("search space")
    g.add_argument("--space", type=at.path, default=None, help="YAML or JSON file of space fields")
    g.add_argument("--backbone", type=at.csv(str), default=None,
                   help="comma list of backbones " + at.space_default("backbones") + "; valid: "
                        + ", ".join(list_backbones()))
    g.add_argument("--width", type=at.positive_float, default=None,
                   help="channel multiplier of the searched net (SEDONA's) "
                        + at.space_default("width"))
    g.add_argument("--min-blocks", type=at.positive_int, default=None,
                   help="smallest K " + at.space_default("min_blocks"))
    g.add_argument("--max-blocks", type=at.positive_int, default=None,
                   help="largest K " + at.space_default("max_blocks"))
    g.add_argument("--min-units", type=at.positive_int, default=None,
                   help="units per block " + at.space_default("min_units"))
    g.add_argument("--heads", type=at.csv(str), default=None,
                   help="aux head families to try " + at.space_default("heads"))
    g.add_argument("--losses", type=at.csv(str), default=None,
                   help="local losses to try " + at.space_default("losses"))
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop and flip of training batches, for every trial and BP "
                        + at.space_default("augment"))
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                   help="warm-up + cosine, or one-cycle, for every trial and BP "
                        + at.space_default("lr_schedule"))
    g = p.add_argument_group("constraints (known before training: a sample that breaks one is "
                             "rejected untrained; part of the space)")
    g.add_argument("--min-speedup", type=at.positive_float, default=None, metavar="S",
                   help="least speed-up over end-to-end BP (BP's step / the slowest block's) "
                        + at.space_default("min_speedup"))
    g.add_argument("--max-memory", type=at.fraction, default=None, metavar="R",
                   help="most peak saved activations, as a fraction of BP's, in (0, 1] "
                        + at.space_default("max_memory"))
    g.add_argument("--cost-model", default=SearchSettings.cost_model,
                   choices=get_args(CostModel),
                   help="the speed-up from step times measured once per study on its device, "
                        "or from FLOPs (default %(default)s; both are recorded)")
    # Defaults are SearchSettings' field defaults, shown by %(default)s.
    g = p.add_argument_group("trials")
    g.add_argument("--epochs", type=at.positive_int, default=SearchSettings.epochs,
                   help="per trial (default %(default)s)")
    g.add_argument("--n-trials", type=at.positive_int, default=SearchSettings.n_trials,
                   help="the study's total over reruns and workers (default %(default)s)")
    g.add_argument("--timeout", type=at.positive_float, default=None, help="seconds")
    g.add_argument("--sampler", default=SearchSettings.sampler, choices=get_args(Sampler),
                   help="(default %(default)s)")
    g.add_argument("--pruner", default=SearchSettings.pruner, choices=get_args(Pruner),
                   help="(default %(default)s)")
    g.add_argument("--min-epochs", type=at.positive_int, default=SearchSettings.min_epochs,
                   help="earliest epoch a trial may be pruned at (default %(default)s)")
    g.add_argument("--reduction-factor", type=at.positive_int,
                   default=SearchSettings.reduction_factor, help="(default %(default)s)")
    g.add_argument("--pruner-startup", type=at.count, default=SearchSettings.pruner_startup,
                   help="median pruner: finished trials needed before it prunes "
                        "(default %(default)s)")
    g.add_argument("--objectives", type=at.csv(str), default=SearchSettings.objectives,
                   help="accuracy | accuracy,speedup | accuracy,speedup,memory (default "
                        + ",".join(SearchSettings.objectives) + ")")
    g.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                   help="queue the paper's and the uniform decoupling first and run the BP "
                        "learning-rate sweep")
    g.add_argument("--bp-lrs", type=at.csv(float), default=SearchSettings.bp_lrs,
                   help="(default " + ",".join(map(str, SearchSettings.bp_lrs)) + ")")
    g.add_argument("--heartbeat", type=at.positive_int, default=SearchSettings.heartbeat,
                   help="seconds between a running trial's heartbeats (RDB storages); a "
                        "trial that misses three is failed and re-queued (default %(default)s)")
    g.add_argument("--confirm-top", type=at.count, default=SearchSettings.confirm_top,
                   metavar="N", help="after the search, re-train the N best trials, the "
                   "reference trials and BP for more seeds; they then rank by their mean "
                   "(0: off; default %(default)s)")
    g.add_argument("--confirm-seeds", type=at.positive_int, default=SearchSettings.confirm_seeds,
                   metavar="S", help="seeds each confirmed config trains beyond the search's "
                   "own (default %(default)s)")
    g.add_argument("--jobs", type=at.jobs, default=1,
                   help=f"worker processes on this machine sharing the study, at most "
                        f"{at.JOBS_PER_CORE} per core (more machines: the same command on each, "
                        "one --storage)")
    g.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--seed", type=at.seed, default=SearchSettings.seed,
                   help="data split, initial weights and sampler (default %(default)s)")
    add_data_flags(p)
    p.set_defaults(func=commands.cmd_run)


def add_studies(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("studies", help="the studies in a storage, trial counts and best values")
    add_study_flags(p)
    p.set_defaults(func=commands.cmd_studies)


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report of a study")
    add_study_flags(p)
    p.add_argument("-o", "--output", type=at.path, required=True,
                   help="the HTML file (not '-': outputs are files, never stdout)")
    p.add_argument("--csv", type=at.path, default=None, help="also the trials as CSV")
    p.add_argument("--parquet", type=at.path, default=None, help="also the trials as Parquet")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing files (refused otherwise)")
    p.set_defaults(func=commands.cmd_report)


def add_dashboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="optuna-dashboard on a storage (localhost)")
    p.add_argument("--storage", default=os.environ.get("BWBPF_STORAGE", DEFAULT_STORAGE))
    p.add_argument("--port", type=at.port, default=8080, help="(default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default local)")
    p.set_defaults(func=commands.cmd_dashboard)


PROG = "bwbpf-search"
QUIET_HELP = "warnings and errors only"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (add_run, add_export, add_train, add_report, add_dashboard, add_studies):
        add(sub)
    for p in sub.choices.values():  # -q after the subcommand too; SUPPRESS keeps a leading -q
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help=QUIET_HELP)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    args, extra = build_parser().parse_known_args(argv)
    if extra:  # reported by the subcommand they were given to, as argparse's other errors
        raise UsageError(f"{PROG} {args.command}", f"unrecognized arguments: {' '.join(extra)}")
    args.argv = argv
    return args
