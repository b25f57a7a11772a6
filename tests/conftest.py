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


@pytest.fixture
def register():
    """``register(table, name, value)``: add to a :class:`kwlab.utils.Registry` its one way
    (``table.register``), undone after the test; a name already there is swapped for ``value`` and put
    back afterwards (a test's smaller stand-in for a built-in entry)."""
    undo = []

    def _register(table, name, value):
        old = table.unregister(name) if name in table else None
        table.register(name, value)
        undo.append((table, name, old))
        return value

    yield _register
    for table, name, old in reversed(undo):
        table.unregister(name)
        if old is not None:
            table.register(name, old)


@pytest.fixture
def calibrated_model():
    """``make(method, widths)``: a ResNet-20 of ``method`` (seed 0) at tau 0.3 with measured BatchNorm
    statistics, in eval mode -- the model the export tests compare with eager (DCD's latent products overflow
    without measured statistics)."""
    options = {"kerneldna": {"wiring": "pairing"}, "fdconv": {"kernel_num": 4}}

    def make(method: str, widths=(32, 32, 64)):
        torch.manual_seed(0)
        model = kwlab.create_model(
            "resnet20_cifar", method=method, num_classes=10, widths=list(widths), **options.get(method, {})
        )
        if method != "static":
            kwlab.set_temperature(model, 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(32, 3, 16, 16))
        return model.eval()

    return make
