import pytest
import torch

# The unit tests use small tensors, where one thread is as fast as two (and CI has two cores
# that the notebook tests and other processes share): one thread keeps the suite fast and steady.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
