import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest


@pytest.fixture(scope="session", autouse=True)
def fixture_patch_reader(tmp_path_factory):
    """Point $MEDVR_CACHE at a temp folder holding a tiny random-weight patch reader, so the agents that read
    with it (scripted, no-zoom, oracle) never build the real one (CPU minutes) in tests."""
    try:
        from agents.patch_reader.testing import write_fixture_reader
    except ImportError:  # no torch: the agents' tests skip or fail on their own
        yield None
        return
    before = os.environ.get("MEDVR_CACHE")
    os.environ["MEDVR_CACHE"] = str(tmp_path_factory.mktemp("medvr_cache"))
    yield write_fixture_reader()
    if before is None:
        os.environ.pop("MEDVR_CACHE", None)
    else:
        os.environ["MEDVR_CACHE"] = before


@pytest.fixture(scope="module")
def one_torch_thread():
    """Pin torch to one thread for a test module: on a busy 2-core machine, two OpenMP threads made
    single-view inference up to 80x slower. Modules opt in with ``pytestmark = usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
