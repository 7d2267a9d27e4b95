"""The data a `train` or `run` command's flags name (``parser.add_data_flags``), on its
device."""

from __future__ import annotations

import argparse

import torch

from bwbpf.trainers import Data, load_data, resolve_device


def load_data_from(args: argparse.Namespace) -> Data:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    return load_data(args.dataset, data_dir=args.data_dir, device=device, val_size=args.val_size,
                     train_subset=args.train_subset, seed=args.seed, download=args.download,
                     image_size=args.image_size)
