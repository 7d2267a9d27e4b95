"""The `bwbpf-search` command line: one subparser per subcommand. The flags of run settings
are made from their declarations (``SearchSettings`` and ``SearchSpace`` fields, see
spaces.declared), the others here with a type from ``argtypes``, so the help text and the
code's default come from one place. ``parse`` turns an argv into the namespace that
``commands`` reads; a bad flag is a ``UsageError`` (one line)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn, Sequence

from bwbpf.search.command_line import argtypes as at
from bwbpf.search.study.settings import DATA, TRAIN_EPOCHS, TRIALS, SearchSettings
from bwbpf.search.study.storage import package_version
from bwbpf.spaces import BlockOptim, SearchSpace, UserError
from bwbpf.spaces.declared import Declared, choices, declared
from bwbpf.spaces.space import CONSTRAINTS, SPACE


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


def add_declared(g: argparse._ArgumentGroup, cls: type, group: str, *, space: bool = False
                 ) -> None:
    """The flags of ``cls``'s fields declared in ``group`` (spaces.declared): parsed and checked
    by their kind, defaulting to the field's default (space fields: to None, so that a run
    names only what it sets; their help shows the --space file's or the field's default)."""
    for f, d in declared(cls):
        if d.group != group or d.flag is None:
            continue
        help = d.help + (" " + at.space_default(f.name) if space else "")
        kw = _flag(cls, f.name, d, default=None if space else f.default, help=help)
        g.add_argument(d.flag, **kw)
        if d.renamed_from:
            g.add_argument(d.renamed_from, **{**kw, "help": argparse.SUPPRESS},
                           action=_Renamed, new=d.flag)


def add_shared(g: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, name: str, *,
               default: Any, help: str) -> None:
    """The flag of another command's declared setting (`train`'s --seed is `run`'s), parsed
    and checked by the declaration's kind; the default and help are this command's."""
    d = next(d for f, d in declared(cls) if f.name == name)
    assert d.flag is not None
    g.add_argument(d.flag, **_flag(cls, name, d, default=default, help=help))


def _flag(cls: type, name: str, d: Declared, *, default: Any, help: str) -> dict[str, Any]:
    """argparse's keywords for a declared setting's flag."""
    assert d.flag is not None
    kw: dict[str, Any] = {"dest": name, "help": help}
    if d.metavar:
        kw["metavar"] = d.metavar
    if d.kind == "bool":
        if d.flag.startswith("--no-"):
            kw["action"] = "store_false"
        elif default is False:
            kw["action"] = "store_true"
        else:
            kw.update(action=argparse.BooleanOptionalAction, default=default)
    elif d.kind == "choice":
        kw.update(choices=choices(cls, name), default=default)
    else:
        kw.setdefault("metavar", d.flag.lstrip("-").upper().replace("-", "_"))
        allowed = choices(cls, name) if d.options is not None else ()
        kw.update(type=at.of_kind(d.kind, allowed) if d.kind else str, default=default)
    return kw


class _Renamed(argparse.Action):
    """A flag's former name: it still works, and says its new name once (on stderr)."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str,
                 **kw: Any) -> None:
        super().__init__(option_strings, dest, **kw)
        self.new, self.said = new, False

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if not self.said:
            print(f"{parser.prog}: {self.option_strings[0]} is now {self.new} (the old name "
                  "still works)", file=sys.stderr)
            self.said = True
        setattr(namespace, self.dest, values)


def add_data_flags(p: argparse.ArgumentParser) -> None:
    # The search's settings; `train` shares them, so a trained winner sees the data its
    # search saw.
    g = p.add_argument_group(DATA)
    add_declared(g, SearchSettings, DATA)
    g.add_argument("--threads", type=at.up_to_cores, default=None,
                   help="CPU threads for torch, at most the machine's cores (default: torch's "
                        "choice)")


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="full training of one decoupling")
    p.add_argument("--arch", default="paper",
                   help="paper, uniform, or an exported JSON file (carried to --backbone and "
                        "--width when they differ from the file's, keeping its constraints)")
    p.add_argument("--backbone", default=None, type=at.backbone,
                   help=f"backbone (default {SearchSpace.backbones[0]} for paper/uniform; the "
                        "file's otherwise)")
    add_shared(p, SearchSpace, "width", default=None,
               help=f"channel multiplier (default {SearchSpace.width} for paper/uniform; the "
                    "file's)")
    add_shared(p, SearchSettings, "seed", default=SearchSettings.seed,
               help="(default %(default)s)")
    add_shared(p, SearchSettings, "epochs", default=TRAIN_EPOCHS, help="(default %(default)s)")
    add_data_flags(p)
    p.add_argument("--lr", type=at.positive_float, default=BlockOptim.lr,
                   help="learning rate of the built-in decouplings")
    p.add_argument("--bp-lr", type=at.positive_float, default=None,
                   help="learning rate of the BP baseline (default: the study's BP sweep "
                        "winner recorded in the file, else --lr)")
    p.add_argument("--compare-bp", action="store_true",
                   help="also train end-to-end BP on the same backbone and budget")
    add_shared(p, SearchSpace, "augment", default=None,
               help="random crop and flip of training batches, for both (default: on)")
    add_shared(p, SearchSpace, "lr_schedule", default=None,
               help="warm-up + cosine, or one-cycle (default: as the file's search trained it; "
                    "the built-ins: " + SearchSpace.lr_schedule + ")")
    p.add_argument("--out", type=at.path, default=None,
                   help="results folder (not '-': results are files)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--stop-after", type=at.positive_int, default=None,
                   help="stop after this epoch (resume later with --resume)")
    p.add_argument("--force", action="store_true", help="replace an earlier run in --out")
    add_distributed_flags(p)
    add_transfer_flags(p, "the file", backbone=False)


def add_distributed_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("distributed (--schedule distributed)")
    g.add_argument("--nproc", type=at.positive_int, default=None, metavar="K",
                   help="start K ranks on this machine (else launch with torchrun)")
    g.add_argument("--blocks-per-rank", type=at.csv(at.positive_int), default=None,
                   metavar="N,N,..",
                   help="blocks per rank, in order (default: balanced by the blocks' FLOPs)")
    g.add_argument("--placement", type=at.csv(at.positive_int), default=None,  # former name
                   dest="blocks_per_rank", help=argparse.SUPPRESS, action=_Renamed,
                   new="--blocks-per-rank")
    g.add_argument("--peer-timeout", type=at.positive_float, default=300.0, metavar="S",
                   help="seconds a rank waits for another before the run stops "
                        "(default %(default)s)")


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write winning decouplings as versioned JSON")
    add_study_flags(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, default=None, help="this trial number")
    which.add_argument("--pareto", action="store_true",
                       help="the Pareto front, the report's (into a folder): feasible trials "
                            "no other beats in accuracy, speed-up and the other objectives")
    which.add_argument("--top", type=at.positive_int, default=None, help="the K most accurate")
    p.add_argument("-o", "--output", type=at.path, required=True,
                   help="file, or folder (files named <study>-trial<N>.json, the study name "
                        "made a safe file name); not '-': outputs are files, never stdout")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    add_transfer_flags(p, "the exported decouplings")


def add_transfer_flags(p: argparse.ArgumentParser, what: str, *, backbone: bool = True
                       ) -> None:
    """Carrying a decoupling to another member of its family, keeping its constraints."""
    g = p.add_argument_group("transfer to a deeper or wider net (keeping the constraints the "
                             "decoupling was found under)")
    if backbone:
        g.add_argument("--backbone", default=None, type=at.backbone,
                       help=f"carry {what} to this backbone (same family)")
        g.add_argument("--width", type=at.positive_float, default=None,
                       help=f"carry {what} to this channel multiplier")
    g.add_argument("--ignore-constraints", action="store_true",
                   help="keep the cuts at the same stages and fractions even where the "
                        "constraints break on the target")
    add_shared(g, SearchSettings, "cost_model", default=None,
               help="judge the constraints on the target, and the speed-up `train` reports, by "
                    "step times measured here or by FLOPs (default: the document's; for "
                    f"paper/uniform the search's default, {SearchSettings.cost_model})")


DEFAULT_STORAGE = "sqlite:///study.db"


def add_study_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=os.environ.get("BWBPF_STORAGE", DEFAULT_STORAGE),
                   help=f"sqlite:///FILE (default {DEFAULT_STORAGE}, env BWBPF_STORAGE), "
                        "postgresql+psycopg://USER:PW@HOST/DB, or journal:FILE")
    p.add_argument("--study", default="bwbpf", help="study name (default %(default)s)")


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="search decouplings (the main job)")
    add_study_flags(p)
    g = p.add_argument_group(SPACE)
    g.add_argument("--space", type=at.path, default=None, help="YAML or JSON file of space fields")
    add_declared(g, SearchSpace, SPACE, space=True)
    g = p.add_argument_group("constraints (known before training: a sample that breaks one is "
                             "rejected untrained; part of the space)")
    add_declared(g, SearchSpace, CONSTRAINTS, space=True)
    add_declared(g, SearchSettings, CONSTRAINTS)
    g = p.add_argument_group(TRIALS)
    add_declared(g, SearchSettings, TRIALS)
    g.add_argument("--jobs", type=at.jobs, default=1,
                   help=f"worker processes on this machine sharing the study, at most "
                        f"{at.JOBS_PER_CORE} per core (more machines: the same command on each, "
                        "one --storage)")
    g.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    add_data_flags(p)


def add_studies(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("studies", help="the studies in a storage, trial counts and best values")
    add_study_flags(p)


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report of a study")
    add_study_flags(p)
    p.add_argument("-o", "--output", type=at.path, required=True,
                   help="the HTML file (not '-': outputs are files, never stdout)")
    p.add_argument("--csv", type=at.path, default=None, help="also the trials as CSV")
    p.add_argument("--parquet", type=at.path, default=None, help="also the trials as Parquet")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing files (refused otherwise)")


def add_backbones(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbones", help="the units of a backbone: where the search may cut it")
    p.add_argument("name", nargs="?", type=at.backbone, default=None,
                   help="a registered backbone, torchvision:NAME or py:MODULE:FUNCTION (none: "
                        "list the registered ones)")
    p.add_argument("--image-size", type=at.int_in(8, 1024), default=32,
                   help="side of the square input images (default %(default)s)")
    p.add_argument("--channels", type=at.int_in(1, 64), default=3,
                   help="input channels (default %(default)s)")


def add_dashboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="optuna-dashboard on a storage (localhost)")
    p.add_argument("--storage", default=os.environ.get("BWBPF_STORAGE", DEFAULT_STORAGE))
    p.add_argument("--port", type=at.port, default=8080, help="(default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default local)")


PROG = "bwbpf-search"
QUIET_HELP = "warnings and errors only"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (add_run, add_export, add_train, add_report, add_dashboard, add_studies,
                add_backbones):
        add(sub)
    for p in sub.choices.values():  # -q after the subcommand too; SUPPRESS keeps a leading -q
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help=QUIET_HELP)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    args, extra = build_parser().parse_known_args(argv)
    if extra:  # reported by the subcommand they were given to, as argparse's other errors
        raise UsageError(f"{PROG} {args.command}", f"unrecognized arguments: {' '.join(extra)}")
    return args
