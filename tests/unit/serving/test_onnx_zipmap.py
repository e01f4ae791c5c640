"""ONNX classifiers ending in ZipMap (skl2onnx's and onnxmltools' default) are served from the [N, C]
tensor ZipMap is made from; a ZipMap whose maps something else consumes is left alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.runtimes.onnx import OnnxRuntime, unzip_maps


def _zipmap_model(consumed: bool = False) -> onnx.ModelProto:
    """Softmax over two inputs, then ZipMap to {0: p0, 1: p1} maps, as converters end a classifier."""
    seq_map = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    )
    nodes = [
        helper.make_node("Softmax", ["input"], ["probabilities"], axis=1),
        helper.make_node(
            "ZipMap", ["probabilities"], ["maps"], domain="ai.onnx.ml", classlabels_int64s=[0, 1]
        ),
    ]
    outputs = [helper.make_value_info("maps", seq_map)]
    if consumed:
        nodes.append(helper.make_node("Identity", ["maps"], ["maps_again"]))
        outputs = [helper.make_value_info("maps_again", seq_map)]
    graph = helper.make_graph(
        nodes, "zipmapped", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 2])], outputs
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)]
    )


def test_zipmap_output_is_served_as_a_probability_tensor() -> None:
    model_bytes = _zipmap_model().SerializeToString()
    runtime = OnnxRuntime(model_bytes, 2, "classification")
    x = np.array([[0.0, 1.0], [2.0, -1.0], [np.nan, 0.0]], dtype=np.float32)
    e = np.exp(x - np.nanmax(x, axis=1, keepdims=True))
    got = runtime.predict(x)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got[:2], (e / e.sum(axis=1, keepdims=True))[:2], atol=1e-6)
    assert OnnxRuntime.task_of(model_bytes) == "classification"


def test_unzip_maps_edits_only_a_zipmap_that_ends_the_graph() -> None:
    model = _zipmap_model()
    assert unzip_maps(model) is True
    assert [n.op_type for n in model.graph.node] == ["Softmax"]
    out = model.graph.output[0]
    assert out.name == "probabilities"
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [0, 2]
    assert unzip_maps(model) is False  # nothing left to do
    consumed = _zipmap_model(consumed=True)
    assert unzip_maps(consumed) is False
    assert [n.op_type for n in consumed.graph.node] == ["Softmax", "ZipMap", "Identity"]


def test_a_zipmap_something_consumes_is_still_refused() -> None:
    # (onnxruntime itself refuses this graph: Identity takes no sequence of maps)
    with pytest.raises(BundleError):
        OnnxRuntime(_zipmap_model(consumed=True).SerializeToString(), 2, "classification")
