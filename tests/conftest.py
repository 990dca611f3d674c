import os
import tempfile

import pytest
import torch


def pytest_configure(config):
    """Keep every cache written during the tests (datasets, feature networks) out of the
    user's home, including those written by module- and session-scoped fixtures."""
    os.environ["VAEBENCH_CACHE"] = tempfile.mkdtemp(prefix="vaebench-test-cache-")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
