import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    """Keep caches written by the code under test out of the user's home."""
    monkeypatch.setenv("VAEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
