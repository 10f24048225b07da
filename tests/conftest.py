import os
import tempfile

import pytest
import torch

os.environ.setdefault("RELUGEOM_QUIET", "1")
# generated data sets (MNIST-1D) are cached outside the user's home, shared by the test workers
os.environ.setdefault("RELUGEOM_CACHE", os.path.join(tempfile.gettempdir(), f"relugeom-test-cache-{os.getuid()}"))
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
