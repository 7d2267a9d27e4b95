"""What each `bwbpf-search` subcommand does: one library call each, from parsed flags."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

from bwbpf.reports import trials_frame, write_report
from bwbpf.reports.record import best_trial, describe_counts, state_counts
from bwbpf.reports.study_attrs import confirmations
from bwbpf.search.command_line.data_flags import load_data_from
from bwbpf.search.command_line.launch import relaunch
from bwbpf.search.command_line.ranks import launch, train_distributed
from bwbpf.search.run.runner import run_search, run_workers
from bwbpf.search.run.summary import summary
from bwbpf.search.study.settings import SearchSettings, checked_plan
from bwbpf.search.study.storage import (
    check_study_name,
    checked_studies,
    load_existing,
    open_storage,
    redact,
)
from bwbpf.search.trial.costs import run_cost_model
from bwbpf.search.winners.carry import carry_arch
from bwbpf.search.winners.exporting import Target, export
from bwbpf.search.winners.full_training import bp_for, check_fits, load_arch, train_one
from bwbpf.search.winners.run_folder import check_out, finish, prepare_out, undone_unless_saved
from bwbpf.search.winners.train_settings import TrainSettings
from bwbpf.spaces import Decoupling, SearchSpace, UserError, file_stem, fit_to_networks
from bwbpf.spaces.declared import before, declared
from bwbpf.spaces.files import check_output, refuse_stdout, write_bytes_atomic
from bwbpf.spaces.heads import check_schedule
from bwbpf.trainers import Data, TrainPlan, memory_guard, resolve_device


def cmd_train(args: argparse.Namespace) -> int:
    d, found, doc = load_arch(args.arch, args.backbone, args.width, args.lr)
    # Augmented unless told: a full training needs it, whatever the search's short trials
    # did. The schedule: as the search trained it (a file from before that was recorded:
    # cosine), for the built-ins the search's default.
    augment = TrainPlan.augment if args.augment is None else args.augment
    lr_schedule = args.lr_schedule or found.lr_schedule or (
        SearchSpace.lr_schedule if args.arch in ("paper", "uniform")
        else before(SearchSpace)["lr_schedule"])
    name = Path(args.arch).stem if args.arch not in ("paper", "uniform") else args.arch
    target = args.backbone or d.backbone
    out = args.out or Path("runs") / f"train-{file_stem(target)}-{name}-seed{args.seed}"
    loaded: list[Data] = []  # the data, when the transfer needed its shape
    transferred = None
    if doc is not None:
        d, transferred = carry_arch(args, d, doc, out, lambda: shape_of(args, loaded))
    bp_lr = args.bp_lr or found.bp_lr or args.lr
    settings = run_settings(args, d, bp_lr, augment, lr_schedule, transferred, doc)
    # Everything is checked (the data loaded) before --out is touched: a refused --force
    # run must leave the earlier one as it was.
    for dev in args.devices:
        resolve_device(dev)
    plan = checked_plan(epochs=settings.epochs, batch_size=args.batch_size, seed=args.seed,
                        device=args.device, schedule=args.schedule, devices=args.devices,
                        compile=args.compile, augment=augment, lr_schedule=lr_schedule)
    check_schedule((a.family for a in d.aux), args.schedule)
    if args.schedule == "distributed":
        if args.nproc:
            return launch(args, d.num_blocks, out, settings)
        return train_distributed(args, d, out, settings, plan, bp_lr)
    for flag, given in (("--nproc", args.nproc), ("--blocks-per-rank", args.blocks_per_rank)):
        if given:
            raise UserError(f"{flag} needs --schedule distributed")
    with memory_guard(f"building and training {d.backbone} x{d.width:g}"):
        return train_here(args, d, out, settings, plan, bp_lr, loaded[0] if loaded else None)


def run_settings(args: argparse.Namespace, d: Decoupling, bp_lr: float, augment: bool,
                 lr_schedule: str, transferred: dict[str, Any] | None,
                 doc: dict[str, Any] | None) -> TrainSettings:
    """What settings.json records of a `train` run."""
    return TrainSettings(
        decoupling=d.to_dict(), dataset=args.dataset, epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, train_subset=args.train_subset,
        val_size=args.val_size, image_size=args.image_size, compare_bp=args.compare_bp,
        bp_lr=bp_lr if args.compare_bp else None, schedule=args.schedule,
        devices=tuple(args.devices), augment=augment, lr_schedule=lr_schedule,
        cost_model=run_cost_model(args.cost_model, doc), transferred=transferred)


def shape_of(args: argparse.Namespace, loaded: list[Data]) -> dict[str, Any]:
    """The data's input shape (the data kept in ``loaded``, so it is loaded once)."""
    loaded.append(load_data_from(args))
    data = loaded[-1]
    return {"in_channels": data.in_channels, "image_size": data.image_size,
            "num_classes": data.num_classes}


def train_here(args: argparse.Namespace, d: Decoupling, out: Path, settings: TrainSettings,
               plan: TrainPlan, bp_lr: float, data: Data | None = None) -> int:
    """`train` in this process: the decoupling (and BP with --compare-bp) into ``out``."""
    check_out(out, settings, resume=args.resume, force=args.force)
    runs = {"blockwise": d}
    if args.compare_bp:
        runs["backprop"] = bp_for(d, bp_lr)
    data = data or load_data_from(args)
    check_fits(list(runs.values()), data)
    if note := data.batch_note(plan.batch_size):
        print(f"bwbpf-search: {note}", file=sys.stderr)
    made_out = not out.exists()
    continuing = prepare_out(out, settings, resume=args.resume, force=args.force)
    results: dict[str, dict[str, Any] | None] = {}
    with undone_unless_saved(out, fresh=not continuing, made_out=made_out):
        for key, dec in runs.items():
            results[key] = train_one(dec, data, plan, out / key, key, resume=args.resume,
                                     stop_after=args.stop_after,
                                     cost_model=settings.cost_model)
            if results[key] is None:
                break
        return finish(out, results, settings, args.stop_after)


def cmd_export(args: argparse.Namespace) -> int:
    check_study_name(args.study)
    refuse_stdout(args.output, "-o")
    study = load_existing(open_storage(args.storage, heartbeat_s=None, create=False),
                          args.study)
    to = Target(args.backbone, args.width, args.ignore_constraints, args.cost_model)
    paths = export(study, args.output, trial=args.trial, pareto=args.pareto, top=args.top,
                   force=args.force, to=to)
    for p in paths:
        print(p)
    return 0


def space_from(args: argparse.Namespace) -> tuple[SearchSpace, frozenset[str]]:
    """The run's space, and the fields it names (by flag or in the --space file): a rerun of
    a study keeps the study's value of the others (stored_settings.adopt_space)."""
    named: set[str] = set()
    base = SearchSpace()
    if args.space:
        base = SearchSpace.from_file(args.space)
        named |= SearchSpace.file_fields(args.space)
    over = {f.name: getattr(args, f.name) for f, d in declared(SearchSpace)
            if d.flag is not None and getattr(args, f.name) is not None}
    if args.min_blocks is None and args.max_blocks is not None and (
            2 <= args.max_blocks < base.min_blocks):  # no silent change of the space's K range
        raise UserError(f"--max-blocks {args.max_blocks} is below the space's min_blocks "
                        f"{base.min_blocks}; pass --min-blocks")
    fields = fit_to_networks({**base.__dict__, **over}, named | set(over))
    return SearchSpace.from_mapping(fields, where="search space"), frozenset(named | set(over))


def settings_from(args: argparse.Namespace) -> SearchSettings:
    """The run's settings: every declared setting from its flag (spaces.declared)."""
    space, named = space_from(args)
    given = {f.name: getattr(args, f.name) for f, d in declared(SearchSettings) if d.flag}
    for name in ("data_dir", "warm_start"):  # paths: stored as text
        if given[name] is not None:
            given[name] = str(given[name])
    return SearchSettings(study=args.study, storage=args.storage, space=space,
                          space_given=named, quiet=args.quiet, **given)


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    code = 0
    if args.jobs > 1:
        study, code = run_workers(settings, [worker_launch(args, i) for i in range(args.jobs)])
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        study = run_search(settings)
    if args.worker is None:  # a --jobs worker leaves the summary to its parent
        for line in summary(study):
            print(line)
    return code


def worker_launch(args: argparse.Namespace, worker: int) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of one of --jobs worker processes: the same `run`, baselines and
    --warm-start's starting trials queued already, the cores shared out (trials, not workers,
    seed the sampler: search.study.workers). The storage URL goes in the environment
    (BWBPF_STORAGE), never in the argv, where `ps` would show its password."""
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    cmd = relaunch(args, quiet=True, leave_out=("storage", "warm_start", "jobs"), then=[
        "--worker", str(worker), "--no-baselines", "--threads", str(threads),
        "--confirm-top", "0", "--promote-top", "0"])  # the parent promotes and confirms
    return cmd, {**os.environ, "BWBPF_STORAGE": args.storage}


def cmd_studies(args: argparse.Namespace) -> int:
    check_study_name(args.study)  # not used here, but a bad flag is still refused
    storage = open_storage(args.storage, heartbeat_s=None, create=False)
    studies = checked_studies(storage)  # all read (a bad value refused) before a line
    if not studies:
        print("no studies")
    for study in studies:
        best = best_trial(study)
        where = "no result yet"
        if best:
            c = confirmations(study).get(best.number)
            where = f"best {c.shown() if c else f'{best.values[0]:.4f}'} (trial {best.number})"
        states = describe_counts(state_counts(study))
        dirs = ",".join(d.name.lower() for d in study.directions)
        print(f"{study.study_name}: {states}; {dirs}; {where}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    check_study_name(args.study)
    outputs = [(f, p) for f, p in (("-o", args.output), ("--csv", args.csv),
                                   ("--parquet", args.parquet)) if p is not None]
    for flag, path in outputs:  # all refused before the storage is opened or a file written
        if path.is_dir() or not path.parent.is_dir():
            raise UserError(f"{flag} {path}: need a file in an existing folder")
        check_output(path, flag, force=args.force)
    if len({p.resolve() for _, p in outputs}) < len(outputs):
        raise UserError("-o, --csv and --parquet must name different files")
    study = load_existing(open_storage(args.storage, heartbeat_s=None, create=False),
                          args.study)
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


def cmd_dashboard(args: argparse.Namespace) -> int:
    import optuna_dashboard

    check_listen(args.host, args.port)
    storage = open_storage(args.storage, heartbeat_s=None, create=False)
    checked_studies(storage)  # the server answers HTTP 500 on a study it cannot read
    print(f"optuna-dashboard for {redact(args.storage)} on http://{args.host}:{args.port}/",
          flush=True)
    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    except OSError as e:  # taken since check_listen, or an address the server cannot use
        raise UserError(f"--host {args.host} --port {args.port}: cannot listen there "
                        f"({e.strerror or e})") from None
    return 0


def check_listen(host: str, port: int) -> None:
    """Refuses, in one line, a --host that does not resolve or is not this machine's and a
    --port in use, by binding as the server would (SO_REUSEADDR, as wsgiref's)."""
    import errno
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise UserError(f"--host {host}: cannot resolve it ({why})") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(f"--port {port}: already in use on {host}") from None
            raise UserError(f"--host {host} --port {port}: cannot listen there "
                            f"({e.strerror or e})") from None
