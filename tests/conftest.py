import os
from pathlib import Path

# Compiling flex attention on CPU costs seconds per new shape; the compiled path has its own test.
os.environ.setdefault("REALCAM_FLEX_COMPILE", "0")

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"real-world fixtures not found at {FIXTURES} (they live in ../shared/fixtures beside the repo)")
    return FIXTURES


@pytest.fixture
def one_thread():
    """Tiny shapes gain nothing from a second thread, and on a busy machine idle OpenMP workers spin and wait on
    each other; tests that stream many tiny chunks use this."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def restore_threads():
    """Commands set torch's thread count (``--threads``, default 1); put it back after the test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
