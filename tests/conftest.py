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


# -- tiny random Wan parts (diffusers' VAE, transformers' umT5 and a word-level tokenizer), built locally ------------
TINY_WORDS = "a the camera video scene moves left right up down over city street car dog walks runs on in".split()


def make_tiny_wan_vae(seed: int = 0, **overrides):
    """A random ``AutoencoderKLWan`` (base dim 4, Wan2.1's 8x / 4x compression, 16 channels) with every
    parameter drawn, so no layer is an identity or zero at init."""
    from diffusers import AutoencoderKLWan

    config = dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                  temperal_downsample=[False, True, True], **overrides)
    vae = AutoencoderKLWan(**config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in vae.named_parameters():   # RMS-norm gains in [0.5, 1.5], weights and biases around 0
            p.copy_(0.5 + torch.rand(p.shape, generator=g) if name.endswith("gamma")
                    else 0.3 * torch.randn(p.shape, generator=g))
    return vae.eval()


@pytest.fixture(scope="session")
def tiny_wan_vae_dir(tmp_path_factory) -> Path:
    """A diffusers model folder holding ``vae/`` (config.json + safetensors) of :func:`make_tiny_wan_vae`."""
    root = tmp_path_factory.mktemp("tiny_wan_vae")
    make_tiny_wan_vae().save_pretrained(root / "vae")
    return root


@pytest.fixture(scope="session")
def tiny_umt5_dir(tmp_path_factory) -> Path:
    """A folder with a random 2-layer ``UMT5EncoderModel`` (d_model 16) and a word-level tokenizer that appends
    ``</s>`` like umT5's, both written by save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    root = tmp_path_factory.mktemp("tiny_umt5")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(TINY_WORDS)}}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(root)
    torch.manual_seed(0)
    UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                                relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                dropout_rate=0.0)).save_pretrained(root)
    return root


@pytest.fixture
def restore_threads():
    """Commands set torch's thread count (``--threads``, default 1); put it back after the test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
