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
