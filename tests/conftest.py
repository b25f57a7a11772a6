"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch

import kwlab


@pytest.fixture
def kw_resnet20():
    """A KW 1x resnet20_cifar in eval mode at temperature 0.3 (mid-anneal: signed attention blended with
    the init pattern)."""
    torch.manual_seed(0)
    model = kwlab.create_model("resnet20_cifar", method="kw", preset="1x", num_classes=10).eval()
    kwlab.set_temperature(model, 0.3)
    return model


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (tiny training runs are fastest single-threaded), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
