"""The `bwbpf-search` command: one subcommand per library call."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

import torch

from bwbpf.spaces import BlockOptim, Decoupling, UserError, list_backbones
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


def add_model_flags(p: argparse.ArgumentParser, backbone: str, width: float) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--backbone", default=backbone, choices=list_backbones())
    g.add_argument("--width", type=_positive_float, default=width, help="channel multiplier")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--epochs", type=_positive_int, default=None)


def load_data_from(args: argparse.Namespace, seed: int | None = None) -> Data:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    return load_data(args.dataset, data_dir=args.data_dir, device=device, val_size=args.val_size,
                     train_subset=args.train_subset, seed=args.seed if seed is None else seed,
                     download=args.download, image_size=args.image_size)


# ---------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from bwbpf.search.training import builtin_decoupling, train_one, write_json_atomic

    optim = BlockOptim(lr=args.lr)
    d = builtin_decoupling(args.arch, args.backbone, args.width, optim)
    if args.arch not in ("paper", "uniform") and (args.backbone_given or args.width_given):
        from bwbpf.spaces import ConfigError

        raise ConfigError("--backbone/--width with --arch FILE needs transfer (not yet supported)")
    out = args.out or Path("runs") / f"train-{d.backbone}-{Path(args.arch).stem}-seed{args.seed}"
    if (out / "metrics.json").exists() and not args.force:
        raise UserError(f"--out {out} already holds metrics.json; pass --force to overwrite")
    data = load_data_from(args)
    plan = TrainPlan(epochs=args.epochs or 10, batch_size=args.batch_size, seed=args.seed,
                     device=args.device)
    results = {"blockwise": train_one(d, data, plan, "bp-free")}
    if args.compare_bp:
        bp_optim = BlockOptim(lr=args.bp_lr or args.lr)
        bp = Decoupling.end_to_end(d.backbone, width=d.width, optim=bp_optim)
        results["backprop"] = train_one(bp, data, plan, "backprop")
    results["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                           if k != "func"}
    write_json_atomic(out / "metrics.json", results)
    for name in ("blockwise", "backprop"):
        if name in results:
            print(f"{name:9s} test accuracy {results[name]['test_accuracy']:.4f}")
    print(f"metrics: {out / 'metrics.json'}")
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="full training of one decoupling")
    p.add_argument("--arch", default="paper", help="paper, uniform, or an exported JSON file")
    add_model_flags(p, "vgg8b", 0.25)
    add_data_flags(p)
    p.add_argument("--lr", type=_positive_float, default=0.05)
    p.add_argument("--bp-lr", type=_positive_float, default=None,
                   help="learning rate of the BP baseline (default: --lr)")
    p.add_argument("--compare-bp", action="store_true",
                   help="also train end-to-end BP on the same backbone and budget")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--force", action="store_true", help="overwrite existing results in --out")
    p.set_defaults(func=cmd_train)


# ---------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bwbpf-search", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (add_train,):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 ok, 2 bad input (one line on stderr), 1 other failures."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.backbone_given = any(a.startswith("--backbone") for a in argv)
        args.width_given = any(a.startswith("--width") for a in argv)
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                            format="%(message)s", stream=sys.stderr, force=True)
        func: Command = args.func
        return func(args)
    except UserError as e:
        print(f"bwbpf-search: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bwbpf-search: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else 0
