"""The `bwbpf-search` command: one subcommand per library call."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import torch
from sqlalchemy.exc import SQLAlchemyError

from bwbpf.search.settings import SearchSettings
from bwbpf.search.study import StorageLost, storage_lost
from bwbpf.spaces import SearchSpace, UserError, list_backbones
from bwbpf.trainers import Data, TrainPlan, list_datasets, load_data, resolve_device

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
    g.add_argument("--schedule", default="sequential", choices=["sequential", "pipelined"],
                   help="pipelined: one worker per block, concurrently (same arithmetic)")
    g.add_argument("--devices", type=_csv(str), default=(),
                   help="pipelined: spread the blocks over these devices, e.g. cuda:0,cuda:1")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the blocks and heads (pays off on CUDA; the cache is "
                        "shared by the trials of a process)")


def load_data_from(args: argparse.Namespace, seed: int | None = None) -> Data:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    return load_data(args.dataset, data_dir=args.data_dir, device=device, val_size=args.val_size,
                     train_subset=args.train_subset, seed=args.seed if seed is None else seed,
                     download=args.download, image_size=args.image_size)


# ---------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from bwbpf.search.exporting import write_json_atomic
    from bwbpf.search.training import bp_for, load_arch, prepare_out, train_one

    d, file_metrics = load_arch(args.arch, args.backbone, args.width, args.lr)
    name = Path(args.arch).stem if args.arch not in ("paper", "uniform") else args.arch
    out = args.out or Path("runs") / f"train-{d.backbone}-{name}-seed{args.seed}"
    bp_lr = args.bp_lr or file_metrics.get("bp_lr") or args.lr
    settings = {"decoupling": d.to_dict(), "dataset": args.dataset, "epochs": args.epochs or 10,
                "batch_size": args.batch_size, "seed": args.seed, "train_subset":
                args.train_subset, "val_size": args.val_size, "image_size": args.image_size,
                "compare_bp": args.compare_bp, "bp_lr": bp_lr if args.compare_bp else None,
                "schedule": args.schedule, "devices": list(args.devices)}
    for name in args.devices:
        resolve_device(name)
    prepare_out(out, settings, resume=args.resume, force=args.force)
    data = load_data_from(args)
    plan = TrainPlan(epochs=settings["epochs"], batch_size=args.batch_size, seed=args.seed,
                     device=args.device, schedule=args.schedule, devices=args.devices,
                     compile=args.compile)
    runs = {"blockwise": d}
    if args.compare_bp:
        runs["backprop"] = bp_for(d, bp_lr)
    results: dict[str, dict[str, Any]] = {}
    for key, dec in runs.items():
        r = train_one(dec, data, plan, out / key, key, resume=args.resume,
                      stop_after=args.stop_after)
        if r is None:
            print(f"stopped after epoch {args.stop_after}; continue with --resume --out {out}")
            return 0
        results[key] = r
    write_json_atomic(out / "metrics.json", {**results, "settings": settings})
    for key, res in results.items():
        print(f"{key:9s} test accuracy {res['test_accuracy']:.4f}")
    print(f"results: {out / 'metrics.json'}")
    return 0


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
    p.set_defaults(func=cmd_train)


# ---------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    from bwbpf.search.exporting import export
    from bwbpf.search.study import load_existing, open_storage

    study = load_existing(open_storage(args.storage, heartbeat_s=None), args.study)
    paths = export(study, args.output, trial=args.trial, pareto=args.pareto, top=args.top,
                   force=args.force)
    for p in paths:
        print(p)
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write winning decouplings as versioned JSON")
    add_study_flags(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, default=None, help="this trial number")
    which.add_argument("--pareto", action="store_true", help="the Pareto set (into a folder)")
    which.add_argument("--top", type=_positive_int, default=None, help="the K most accurate")
    p.add_argument("-o", "--output", type=Path, required=True, help="file, or folder")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_export)


# ---------------------------------------------------------------- run
DEFAULT_STORAGE = "sqlite:///study.db"


def add_study_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=os.environ.get("BWBPF_STORAGE", DEFAULT_STORAGE),
                   help="sqlite:///FILE (default sqlite:///study.db, env BWBPF_STORAGE), "
                        "postgresql+psycopg://USER:PW@HOST/DB, or journal:FILE")
    p.add_argument("--study", default="bwbpf", help="study name (default bwbpf)")


def space_from(args: argparse.Namespace) -> SearchSpace:
    base = SearchSpace.from_file(args.space) if args.space else SearchSpace()
    over: dict[str, object] = {}
    if args.backbone is not None:
        over["backbones"] = args.backbone
    for flag, key in (("width", "width"), ("max_blocks", "max_blocks"), ("heads", "heads"),
                      ("min_units", "min_units")):
        if getattr(args, flag) is not None:
            over[key] = getattr(args, flag)
    if args.max_blocks is not None and base.min_blocks > args.max_blocks:
        over["min_blocks"] = 2
    fields = {**base.__dict__, **over}
    return SearchSpace.from_mapping(fields, where="search space")


def settings_from(args: argparse.Namespace) -> SearchSettings:
    return SearchSettings(
        study=args.study, storage=args.storage, space=space_from(args), dataset=args.dataset,
        data_dir=str(args.data_dir) if args.data_dir else None, download=args.download,
        image_size=args.image_size, train_subset=args.train_subset, val_size=args.val_size,
        epochs=args.epochs or 3, batch_size=args.batch_size, n_trials=args.n_trials,
        timeout=args.timeout, sampler=args.sampler, pruner=args.pruner,
        min_epochs=args.min_epochs, reduction_factor=args.reduction_factor,
        pruner_startup=args.pruner_startup, objectives=args.objectives, device=args.device,
        seed=args.seed, baselines=args.baselines, bp_lrs=args.bp_lrs,
        heartbeat=args.heartbeat, quiet=args.quiet, schedule=args.schedule,
        devices=tuple(args.devices), compile=args.compile)


def cmd_run(args: argparse.Namespace) -> int:
    from bwbpf.search.runner import run_search, run_workers, summary

    settings = settings_from(args)
    code = 0
    if args.jobs > 1:
        study, code = run_workers(settings, [worker_command(args, i) for i in range(args.jobs)])
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        study = run_search(settings, worker=args.worker or 0)
    if args.worker is None:  # a --jobs worker leaves the summary to its parent
        for line in summary(study):
            print(line)
    return code


def worker_command(args: argparse.Namespace, worker: int) -> list[str]:
    """The same `run` for one of --jobs worker processes: baselines are queued already, the
    cores are shared out, and the worker number offsets the sampler's seed. The storage URL
    goes by the environment (BWBPF_STORAGE), not the command line, where `ps` would show
    its password."""
    argv = list(args.argv)
    rest, skip = [], False
    for a in argv[argv.index("run") + 1:]:
        if skip or a.startswith("--storage="):
            skip = False
            continue
        if a == "--storage":
            skip = True
            continue
        rest.append(a)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    return [sys.executable, "-m", "bwbpf.search", "-q", "run", *rest, "--jobs", "1",
            "--worker", str(worker), "--no-baselines", "--threads", str(threads)]


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
    p.set_defaults(func=cmd_run)


# ---------------------------------------------------------------- studies
def cmd_studies(args: argparse.Namespace) -> int:
    import optuna

    from bwbpf.search import budget
    from bwbpf.search.runner import best_trial
    from bwbpf.search.study import open_storage

    storage = open_storage(args.storage, heartbeat_s=None)
    names = [s.study_name for s in storage.get_all_studies()]
    if not names:
        print("no studies")
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        counts = budget.finished(study)
        best = best_trial(study)
        where = f"best {best.values[0]:.4f} (trial {best.number})" if best else "no result yet"
        states = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))
        dirs = ",".join(d.name.lower() for d in study.directions)
        print(f"{name}: {states or 'empty'}; {dirs}; {where}")
    return 0


def add_studies(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("studies", help="the studies in a storage, trial counts and best values")
    add_study_flags(p)
    p.set_defaults(func=cmd_studies)


# ---------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace) -> int:
    from bwbpf.reports import trials_frame, write_report
    from bwbpf.reports.files import write_bytes_atomic
    from bwbpf.search.study import load_existing, open_storage

    for flag, path in (("-o", args.output), ("--csv", args.csv), ("--parquet", args.parquet)):
        if path is not None and (path.is_dir() or not path.parent.is_dir()):
            raise UserError(f"{flag} {path}: need a file in an existing folder")
    study = load_existing(open_storage(args.storage, heartbeat_s=None), args.study)
    write_report(study, args.output)
    print(args.output)
    frame = trials_frame(study)
    if args.csv:
        write_bytes_atomic(args.csv, frame.to_csv(index=False).encode())
        print(args.csv)
    if args.parquet:
        write_bytes_atomic(args.parquet, frame.to_parquet(index=False))
        print(args.parquet)
    return 0


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report of a study")
    add_study_flags(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="the HTML file")
    p.add_argument("--csv", type=Path, default=None, help="also the trials as CSV")
    p.add_argument("--parquet", type=Path, default=None, help="also the trials as Parquet")
    p.set_defaults(func=cmd_report)


# ---------------------------------------------------------------- dashboard
def cmd_dashboard(args: argparse.Namespace) -> int:
    import optuna_dashboard

    from bwbpf.search.study import open_storage, redact

    storage = open_storage(args.storage, heartbeat_s=None)
    print(f"optuna-dashboard for {redact(args.storage)} on http://{args.host}:{args.port}/",
          flush=True)
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    return 0


def add_dashboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="optuna-dashboard on a storage (localhost)")
    p.add_argument("--storage", default=os.environ.get("BWBPF_STORAGE", DEFAULT_STORAGE))
    p.add_argument("--port", type=_positive_int, default=8080)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default local)")
    p.set_defaults(func=cmd_dashboard)


# ---------------------------------------------------------------- main
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
