"""ONNX models through onnxruntime (also used for XGBoost bundles that carry a checked ONNX export)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy_serving.errors import BundleError

log = logging.getLogger(__name__)


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto in a graph, its nodes' attributes and its subgraphs (If/Loop bodies)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def reject_external_data(model_bytes: bytes) -> Any:
    """Parse an ONNX model and refuse it if any tensor lives in an external file.

    External data would make onnxruntime open paths named inside the model: files outside the
    verified bundle, possibly anywhere on the pod's filesystem.
    """
    import onnx

    try:
        model = onnx.load_model_from_string(model_bytes)
    except Exception as exc:  # the protobuf decoder raises several unrelated types
        log.debug("ONNX decode error: %s", exc)  # may quote the file: debug log only
        raise BundleError(f"not a valid ONNX model ({type(exc).__name__})") from exc
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0:
            raise BundleError(f"ONNX model references external data (tensor {tensor.name!r}); refused")
    for function in model.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.HasField("t") and attr.t.data_location == onnx.TensorProto.EXTERNAL:
                    raise BundleError("ONNX model references external data in a function; refused")
    return model


def unzip_maps(model: Any) -> bool:
    """Serve a classifier's ZipMap output as the [N, C] probabilities tensor it is made from.

    skl2onnx and onnxmltools end classifiers with ZipMap by default: probabilities as a sequence of
    {class: probability} maps, one per row, which onnxruntime hands to Python as a list of dicts (a
    dict built per row) and which a V2 tensor cannot carry. ZipMap only relabels its input, so each
    ZipMap that feeds a graph output is removed and its input becomes that output: the same numbers,
    in class order (ZipMap's classlabels are the columns, in order). Edits `model` in place; True when
    it changed. A ZipMap whose output feeds another node is left alone.
    """
    import onnx

    graph = model.graph
    consumed = {name for node in graph.node for name in node.input}
    outputs = {o.name: i for i, o in enumerate(graph.output)}
    changed = False
    for node in list(graph.node):
        if node.op_type != "ZipMap" or node.domain != "ai.onnx.ml" or len(node.output) != 1:
            continue
        out = node.output[0]
        if out not in outputs or out in consumed:
            continue
        labels = next(
            (
                len(a.ints) or len(a.strings)
                for a in node.attribute
                if a.name in ("classlabels_int64s", "classlabels_strings")
            ),
            None,
        )
        tensor = onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, [None, labels])
        graph.output[outputs[out]].CopyFrom(tensor)
        graph.node.remove(node)
        changed = True
    return changed


def _servable_bytes(model_bytes: bytes) -> bytes:
    """The model after the external-data check, with ZipMap outputs unzipped (see unzip_maps)."""
    model = reject_external_data(model_bytes)
    return bytes(model.SerializeToString()) if unzip_maps(model) else model_bytes


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, model_bytes: bytes, n_features: int, task: str, threads: int = 1) -> None:
        import onnxruntime as ort

        model_bytes = _servable_bytes(model_bytes)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning threads burn a core each while idle: bad next to other workers on a small pod.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception classes
            log.debug("onnxruntime load error: %s", exc)  # may quote the model: debug log only
            raise BundleError(f"onnxruntime cannot load the model ({type(exc).__name__})") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise BundleError(f"ONNX model must have one [N, F] input, it has {len(inputs)}")
        shape = inputs[0].shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n_features):
            raise BundleError(f"ONNX input shape {shape} does not match [N, {n_features}]")
        self._input = inputs[0].name
        self._output = self._pick_output(task)
        # The public run() re-validates its arguments on every call (~5 us, a third of a one-row
        # prediction); the bound C++ session's run takes the same arguments without that.
        inner = getattr(self._session, "_sess", None)
        self._run = inner.run if inner is not None and hasattr(inner, "run") else None

    def _pick_output(self, task: str) -> str:
        outputs = self._session.get_outputs()
        floats = [o for o in outputs if o.type in ("tensor(float)", "tensor(double)")]
        if task == "classification":
            probs = [o for o in floats if len(o.shape) == 2]
            if not probs:
                raise BundleError("ONNX classifier has no [N, C] float probabilities output")
            named = [o for o in probs if o.name == "probabilities"]
            return str((named or probs)[0].name)
        if not floats:
            raise BundleError("ONNX regressor has no float output")
        return str(floats[0].name)

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if self._run is not None:
            out = self._run([self._output], {self._input: x}, None)[0]
        else:
            out = self._session.run([self._output], {self._input: x})[0]
        out = np.asarray(out, dtype=np.float32)
        return out if out.ndim == 2 and out.shape[1] > 1 else out.reshape(-1)

    @staticmethod
    def task_of(model_bytes: bytes) -> str:
        """classification if the model has an [N, C] float output, else regression (used by pack)."""
        import onnxruntime as ort

        session = ort.InferenceSession(_servable_bytes(model_bytes), providers=["CPUExecutionProvider"])
        for o in session.get_outputs():
            if o.type == "tensor(float)" and len(o.shape) == 2 and o.shape[1] != 1:
                return "classification"
        return "regression"
