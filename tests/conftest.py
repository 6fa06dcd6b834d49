import os

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~3 s on 2 cores; `make test-fast` (pytest -m \"not "
                            "slow\") leaves it out, `make test` runs it")


@pytest.fixture
def tiny_config():
    """A training configuration small enough for a test: xs net, 16x16 MNIST, batch 16."""
    from kakusan.diffusion.training import TrainConfig

    def make(**kw):
        base = dict(data="mnist", image_size=16, preset="xs", batch_size=16, kimg=0.096, warmup_kimg=0.032,
                    checkpoint_kimg=0.032, sample_kimg=100, log_kimg=0.016, sample_grid=8)
        return TrainConfig.from_options({**base, **kw})  # process options (steps, p_mean, ...) by name too
    return make


def tree_bytes(folder):
    """{relative path: bytes} of every file below ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
