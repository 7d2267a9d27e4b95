"""What each `bwbpf-search` subcommand does: one library call each, from parsed flags."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

from bwbpf.search.settings import SearchSettings
from bwbpf.spaces import SearchSpace, UserError
from bwbpf.trainers import Data, TrainPlan, load_data, resolve_device


def load_data_from(args: argparse.Namespace) -> Data:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    return load_data(args.dataset, data_dir=args.data_dir, device=device, val_size=args.val_size,
                     train_subset=args.train_subset, seed=args.seed, download=args.download,
                     image_size=args.image_size)


def cmd_train(args: argparse.Namespace) -> int:
    from bwbpf.search.training import bp_for, load_arch, prepare_out, train_one
    from bwbpf.spaces.files import write_json_atomic

    d, file_metrics = load_arch(args.arch, args.backbone, args.width, args.lr)
    name = Path(args.arch).stem if args.arch not in ("paper", "uniform") else args.arch
    out = args.out or Path("runs") / f"train-{d.backbone}-{name}-seed{args.seed}"
    bp_lr = args.bp_lr or file_metrics.get("bp_lr") or args.lr
    settings = {"decoupling": d.to_dict(), "dataset": args.dataset, "epochs": args.epochs or 10,
                "batch_size": args.batch_size, "seed": args.seed, "train_subset":
                args.train_subset, "val_size": args.val_size, "image_size": args.image_size,
                "compare_bp": args.compare_bp, "bp_lr": bp_lr if args.compare_bp else None,
                "schedule": args.schedule, "devices": list(args.devices)}
    for dev in args.devices:
        resolve_device(dev)
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


def cmd_export(args: argparse.Namespace) -> int:
    from bwbpf.search.exporting import export
    from bwbpf.search.study import load_existing, open_storage

    study = load_existing(open_storage(args.storage, heartbeat_s=None), args.study)
    paths = export(study, args.output, trial=args.trial, pareto=args.pareto, top=args.top,
                   force=args.force)
    for p in paths:
        print(p)
    return 0


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


def cmd_report(args: argparse.Namespace) -> int:
    from bwbpf.reports import trials_frame, write_report
    from bwbpf.search.study import load_existing, open_storage
    from bwbpf.spaces.files import write_bytes_atomic

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


def cmd_dashboard(args: argparse.Namespace) -> int:
    import optuna_dashboard

    from bwbpf.search.study import open_storage, redact

    storage = open_storage(args.storage, heartbeat_s=None)
    print(f"optuna-dashboard for {redact(args.storage)} on http://{args.host}:{args.port}/",
          flush=True)
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    return 0
