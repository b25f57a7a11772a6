"""ONNX with a dynamic batch (issue 31, item 2): ``torch.onnx.export(dynamo=True)`` of every method, run by
ONNX Runtime at batch sizes 1, 3 and 5 and compared with eager; the algorithms ONNX cannot express with a
dynamic batch are refused by name. Skipped where onnx, onnxscript or onnxruntime is not installed (the dev
extra installs them)."""

from __future__ import annotations

import warnings

import pytest
import torch

import kwlab
import kwlab.ops.select

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

BATCHES = (1, 3, 5)


def _export(model: torch.nn.Module, path) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (torch.randn(4, 3, 16, 16),), dynamo=True, dynamic_shapes=({0: batch},), verbose=False
        )
    program.save(str(path))


@pytest.mark.slow
@pytest.mark.parametrize("method", kwlab.list_methods())
def test_onnx_runtime_with_a_dynamic_batch_equals_eager(method, tmp_path, one_thread, calibrated_model):
    model = calibrated_model(method, widths=(16, 16, 32))
    path = tmp_path / f"{method}.onnx"
    _export(model, path)
    graph_input = onnx.load(str(path)).graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # a named dynamic batch, not the example's 4
    assert [d.dim_value for d in dims[1:]] == [3, 16, 16]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in BATCHES:
        x = torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            want = model(x)
        got = torch.from_numpy(session.run(None, {graph_input.name: x.numpy()})[0])
        assert got.shape == (b, 10) and torch.isfinite(want).all()
        scale = float(want.abs().max())
        # 1e-4 relative to the logits' scale (FDConv's FFT in ONNX Runtime: ~5e-6; the others ~1e-6)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("algorithm", kwlab.ops.select.NOT_ONNX_DYNAMIC)
def test_an_algorithm_onnx_cannot_express_is_refused_by_name(algorithm, tmp_path, one_thread):
    """ONNX's Conv takes ``group`` as a constant: forced, these algorithms would fail deep in the exporter
    (an opaque "Unsupported attribute type: SymbolicTensor"); kwlab names them and the working path."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))
    model = kwlab.convert(net, "condconv").eval()
    with kwlab.ops.use_algorithm(algorithm), pytest.raises(Exception) as caught:
        _export(model, tmp_path / "m.onnx")
    chain, err = [], caught.value
    while err is not None:
        chain.append(str(err))
        err = err.__cause__ or err.__context__
    text = "\n".join(chain)
    assert f"kwlab.ops.use_algorithm={algorithm!r} cannot be exported to ONNX with a dynamic batch" in text
    assert "leave the algorithm 'auto'" in text


def test_a_fixed_batch_keeps_the_forced_algorithm(tmp_path, one_thread):
    """Without a dynamic batch ONNX's constant ``group`` is no obstacle: forced ``"grouped"`` exports and
    equals eager."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))
    model = kwlab.convert(net, "condconv").eval()
    x = torch.randn(4, 3, 16, 16)
    with kwlab.ops.use_algorithm("grouped"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), dynamo=True, verbose=False).save(str(tmp_path / "m.onnx"))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-5)
    assert [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node].count("Conv") >= 2
