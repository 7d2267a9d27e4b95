from __future__ import annotations

import pytest
import torch

from bwbpf.trainers import Data, load_data


@pytest.fixture(autouse=True)
def _one_thread_torch() -> None:
    # Tiny tensors: threading costs more than it gives, and it keeps results repeatable.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic() -> Data:
    return load_data("synthetic", seed=0)
