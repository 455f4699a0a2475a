import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Pin torch to one thread for a test module: on a busy 2-core machine, two OpenMP threads made
    single-view inference up to 80x slower. Modules opt in with ``pytestmark = usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
