"""Export and compile at any batch size (issue 31, item 2): ``torch.export`` with a dynamic batch for every
method, checked at several batch sizes against eager; TorchScript refused by name; ``torch.compile`` without
graph breaks or a recompile per batch size in inference."""

from __future__ import annotations

import warnings

import pytest
import torch

import kwlab
from kwlab.ops import dynamic

BATCHES = (1, 3, 4, 9)


@pytest.mark.parametrize("method", kwlab.list_methods())
def test_export_with_a_dynamic_batch_equals_eager_at_every_batch_size(method, one_thread, calibrated_model):
    model = calibrated_model(method)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model, (torch.randn(4, 3, 16, 16),), dynamic_shapes={"x": {0: batch}})
    run = exported.module()
    for b in BATCHES:
        x = torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            want = model(x)
            got = run(x)
        assert got.shape == (b, 10)
        assert torch.isfinite(want).all()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_export_of_a_batch_above_the_chunk_budget(one_thread, calibrated_model):
    """A batch that eager mode splits into chunks (the per-sample kernel budget) exports as one chunk and
    still equals eager."""
    model = calibrated_model("kw")
    old = dynamic._chunk_bytes
    try:
        dynamic.set_chunk_bytes(1 << 16)
        x = torch.randn(9, 3, 16, 16)
        assert len(dynamic._chunks(9, 1 << 14)) > 1  # eager really chunks here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(
                model, (x[:4],), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}}
            )
        with torch.no_grad():
            # one chunk vs several: the same sums in another blocking (float rounding)
            torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-4)
    finally:
        dynamic.set_chunk_bytes(old)


@pytest.mark.parametrize("method", ["kw", "odconv", "dcd"])
def test_torchscript_is_refused_naming_the_working_path(method, calibrated_model):
    model = calibrated_model(method)
    with pytest.raises(RuntimeError, match=r"torch.jit.script does not support.*torch.export.export"):
        torch.jit.script(model)
    with pytest.raises(RuntimeError, match=r"torch.jit.trace does not support.*torch.export.export"):
        torch.jit.trace(model, torch.randn(2, 3, 16, 16))
    torch.jit.trace(torch.nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8))  # static modules still trace


def test_compile_does_not_recompile_per_batch_size(one_thread):
    """Batch sizes 4, 4, 3, 5, 6, in inference and then in training: one graph for the first size and one
    dynamic graph after, as many as the static net (before: 1, 1, 4, 11, 17 graphs, and graph breaks at
    BatchNorm's SymBool)."""
    import torch._dynamo.utils as dynamo_utils

    counts = {}
    for method in ("static", "kw"):
        torch._dynamo.reset()
        dynamo_utils.counters.clear()
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10),
        )  # fmt: skip
        if method == "kw":
            net = kwlab.convert(
                net,
                "kw",
                sharing="layer",
                example_input=torch.randn(2, 3, 8, 8),
                attention_share_warning=None,
            )
        compiled = torch.compile(net, backend="eager")
        seen = []
        for train in (False, True):
            net.train(train)
            for b in (4, 4, 3, 5, 6):
                x = torch.randn(b, 3, 8, 8)
                if train:
                    compiled(x).sum().backward()
                else:
                    with torch.no_grad():
                        torch.testing.assert_close(compiled(x), net(x), rtol=1e-5, atol=1e-5)
                seen.append(dynamo_utils.counters["stats"]["unique_graphs"])
        counts[method] = seen
        assert not dynamo_utils.counters["graph_break"], (method, dict(dynamo_utils.counters["graph_break"]))
    assert counts["kw"][:5] == counts["static"][:5] == [1, 1, 2, 2, 2]  # inference
    assert counts["kw"] == counts["static"]  # then training (forward and backward): as many graphs as static
