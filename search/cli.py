"""The `bwbpf-search` command: one subcommand per library call."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence, get_args

from sqlalchemy.exc import SQLAlchemyError

from bwbpf.search import commands
from bwbpf.search.study import StorageLost, storage_lost
from bwbpf.spaces import UserError, list_backbones
from bwbpf.trainers import list_datasets
from bwbpf.trainers.plan import Schedule

log = logging.getLogger("bwbpf.search")
Command = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line (a UserError), not usage + error."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be >= 1")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return v


def _csv(kind: Callable[[str], object]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r} is an empty list")
        return tuple(kind(t) for t in items)

    return parse


def add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and device")
    g.add_argument("--dataset", default="fashion-mnist", choices=list_datasets())
    g.add_argument("--data-dir", type=Path, default=None,
                   help="where the dataset's files are (or are downloaded to)")
    g.add_argument("--no-download", dest="download", action="store_false",
                   help="never try a torchvision download")
    g.add_argument("--image-size", type=_positive_int, default=None,
                   help="resize images once to this square size (default: native)")
    g.add_argument("--train-subset", type=_positive_int, default=None,
                   help="train on this many images (after the validation hold-out)")
    g.add_argument("--val-size", type=_positive_int, default=None,
                   help="validation images held out of train (default 10%%)")
    g.add_argument("--batch-size", type=_positive_int, default=128)
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    g.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--schedule", default="sequential", choices=get_args(Schedule),
                   help="pipelined: one worker per block, concurrently (same arithmetic)")
    g.add_argument("--devices", type=_csv(str), default=(),
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
                   help="backbone (default vgg8b for paper/uniform; the file's otherwise)")
    p.add_argument("--width", type=_positive_float, default=None,
                   help="channel multiplier (default 0.25 for paper/uniform; the file's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=_positive_int, default=None, help="default 10")
    add_data_flags(p)
    p.add_argument("--lr", type=_positive_float, default=0.05,
                   help="learning rate of the built-in decouplings")
    p.add_argument("--bp-lr", type=_positive_float, default=None,
                   help="learning rate of the BP baseline (default: the study's BP sweep "
                        "winner recorded in the file, else --lr)")
    p.add_argument("--compare-bp", action="store_true",
                   help="also train end-to-end BP on the same backbone and budget")
    p.add_argument("--out", type=Path, default=None, help="results folder")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--stop-after", type=_positive_int, default=None,
                   help="stop after this epoch (resume later with --resume)")
    p.add_argument("--force", action="store_true", help="replace an earlier run in --out")
    p.set_defaults(func=commands.cmd_train)


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write winning decouplings as versioned JSON")
    add_study_flags(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, default=None, help="this trial number")
    which.add_argument("--pareto", action="store_true", help="the Pareto set (into a folder)")
    which.add_argument("--top", type=_positive_int, default=None, help="the K most accurate")
    p.add_argument("-o", "--output", type=Path, required=True, help="file, or folder")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=commands.cmd_export)


DEFAULT_STORAGE = "sqlite:///study.db"


def add_study_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=os.environ.get("BWBPF_STORAGE", DEFAULT_STORAGE),
                   help="sqlite:///FILE (default sqlite:///study.db, env BWBPF_STORAGE), "
                        "postgresql+psycopg://USER:PW@HOST/DB, or journal:FILE")
    p.add_argument("--study", default="bwbpf", help="study name (default bwbpf)")


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="search decouplings (the main job)")
    add_study_flags(p)
    g = p.add_argument_group("search space")
    g.add_argument("--space", type=Path, default=None, help="YAML or JSON file of space fields")
    g.add_argument("--backbone", type=_csv(str), default=None,
                   help="comma list of backbones (default vgg8b); valid: "
                        + ", ".join(list_backbones()))
    g.add_argument("--width", type=_positive_float, default=None,
                   help="channel multiplier of the searched net (default 0.25, as SEDONA)")
    g.add_argument("--max-blocks", type=_positive_int, default=None, help="largest K (default 4)")
    g.add_argument("--min-units", type=_positive_int, default=None, help="units per block (1)")
    g.add_argument("--heads", type=_csv(str), default=None, help="aux head families to try")
    g = p.add_argument_group("trials")
    g.add_argument("--epochs", type=_positive_int, default=None, help="per trial (default 3)")
    g.add_argument("--n-trials", type=_positive_int, default=20,
                   help="the study's total over reruns and workers (default 20)")
    g.add_argument("--timeout", type=_positive_float, default=None, help="seconds")
    g.add_argument("--sampler", default="tpe", choices=["tpe", "random", "nsga2", "gp"])
    g.add_argument("--pruner", default="hyperband", choices=["hyperband", "sha", "median", "none"])
    g.add_argument("--min-epochs", type=_positive_int, default=1,
                   help="earliest epoch a trial may be pruned at")
    g.add_argument("--reduction-factor", type=_positive_int, default=3)
    g.add_argument("--pruner-startup", type=int, default=4,
                   help="median pruner: finished trials needed before it prunes")
    g.add_argument("--objectives", type=_csv(str), default=("accuracy",),
                   help="accuracy | accuracy,speedup | accuracy,speedup,memory")
    g.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                   help="queue the paper's and the uniform decoupling first and run the BP "
                        "learning-rate sweep")
    g.add_argument("--bp-lrs", type=_csv(float), default=(0.02, 0.05, 0.1))
    g.add_argument("--heartbeat", type=_positive_int, default=60,
                   help="seconds between a running trial's heartbeats (RDB storages); a "
                        "trial that misses three is failed and re-queued")
    g.add_argument("--jobs", type=_positive_int, default=1,
                   help="worker processes on this machine sharing the study")
    g.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--seed", type=int, default=0)
    add_data_flags(p)
    p.set_defaults(func=commands.cmd_run)


def add_studies(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("studies", help="the studies in a storage, trial counts and best values")
    add_study_flags(p)
    p.set_defaults(func=commands.cmd_studies)


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report of a study")
    add_study_flags(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="the HTML file")
    p.add_argument("--csv", type=Path, default=None, help="also the trials as CSV")
    p.add_argument("--parquet", type=Path, default=None, help="also the trials as Parquet")
    p.set_defaults(func=commands.cmd_report)


def add_dashboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="optuna-dashboard on a storage (localhost)")
    p.add_argument("--storage", default=os.environ.get("BWBPF_STORAGE", DEFAULT_STORAGE))
    p.add_argument("--port", type=_positive_int, default=8080)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default local)")
    p.set_defaults(func=commands.cmd_dashboard)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bwbpf-search", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (add_run, add_export, add_train, add_report, add_dashboard, add_studies):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 ok, 2 bad input (one line on stderr), 1 other failures."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                            format="%(message)s", stream=sys.stderr, force=True)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happens
        func: Command = args.func
        return func(args)
    except UserError as e:
        print(f"bwbpf-search: error: {e}", file=sys.stderr)
        return 2
    except (StorageLost, SQLAlchemyError) as e:  # the storage went away mid-run
        lost = e if isinstance(e, StorageLost) else storage_lost(e, getattr(args, "storage", ""))
        print(f"bwbpf-search: {lost}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bwbpf-search: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else 0
