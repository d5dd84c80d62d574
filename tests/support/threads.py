"""The host-free tiers use tiny tensors: thread hand-offs dominate on a 2-core box, so run them single-threaded."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
