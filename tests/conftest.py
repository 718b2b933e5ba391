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


# -- tiny random Wan parts (diffusers' VAE, transformers' umT5 and a word-level tokenizer): realcam.tiny_wan ---------
from realcam.tiny_wan import TINY_WORDS, make_tiny_wan_vae, save_tiny_umt5  # noqa: E402,F401 (tests import them here)


@pytest.fixture(scope="session")
def tiny_wan_vae_dir(tmp_path_factory) -> Path:
    """A diffusers model folder holding ``vae/`` (config.json + safetensors) of :func:`make_tiny_wan_vae`."""
    root = tmp_path_factory.mktemp("tiny_wan_vae")
    make_tiny_wan_vae().save_pretrained(root / "vae")
    return root


@pytest.fixture(scope="session")
def tiny_umt5_dir(tmp_path_factory) -> Path:
    """A folder with a random 2-layer ``UMT5EncoderModel`` (d_model 16) and a word-level tokenizer that appends
    ``</s>`` like umT5's, both written by save_pretrained (:func:`realcam.tiny_wan.save_tiny_umt5`)."""
    return save_tiny_umt5(tmp_path_factory.mktemp("tiny_umt5"), d_model=16)


@pytest.fixture
def restore_threads():
    """Commands set torch's thread count (``--threads``, default 1); put it back after the test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
