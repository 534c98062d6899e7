"""What the ONNX front end's converters share: ONNX element types, the import context a
converter reads and emits into, and the elementwise ops a host island may be a table of."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import NpusimError
from ..ir import Node, Tensor

ONNX_DTYPES = {1: "f32", 2: "u8", 3: "i8", 4: "u16", 5: "i16", 6: "i32", 7: "i64", 9: "bool", 10: "f16",
               11: "f64", 21: "u4", 22: "i4"}
_TO_ONNX = {v: k for k, v in ONNX_DTYPES.items()}


def onnx_dtype(code: str) -> int:
    return _TO_ONNX[code]


def import_session_options(level=None):
    """onnxruntime SessionOptions for the front end's own sessions (the load check, the graph
    optimizer, type inference, constant folding): graph optimization `level` (default
    onnxruntime's), fatal-only logging (errors are raised), and one intra-op thread that does not
    spin. They run no inference worth a thread pool, and the session being imported may be
    bounded to fewer threads than onnxruntime's default pool (InferenceSession's `threads`)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if level is not None:
        so.graph_optimization_level = level
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


ELEMENTWISE_OPS = {"DequantizeLinear", "QuantizeLinear", "Identity", "Relu", "Clip", "HardSigmoid", "HardSwish",
                "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "Softplus", "Exp", "Log", "Neg", "Abs", "Sqrt",
                "Erf", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"}


def is_elementwise_island(protos, input_dtypes, constant_size) -> bool:
    """True when an island of ONNX nodes `protos` maps its one 8-bit input (`input_dtypes`: the IR
    dtypes of its inputs) to its outputs value by value: standard elementwise ops whose constant
    operands are single values (per-tensor Q/DQ, scalar Add/Div, Clip bounds); constant_size(name)
    is a constant's element count, None for a tensor that is not constant. Such an island is a
    function of 256 codes (see npusim.session.prepare_host)."""
    if len(input_dtypes) != 1 or input_dtypes[0] not in ("u8", "i8"):
        return False
    return all(p.domain in ("", "ai.onnx") and p.op_type in ELEMENTWISE_OPS
               and all(constant_size(x) in (None, 1) for x in p.input) for p in protos)


class ImportContext:
    """What a converter sees: constants, element types and shapes so far, and the IR being built."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.constants = {t.name: _to_array(t) for t in g.initializer}
        self.tensors: dict[str, Tensor] = {}
        self.value_shapes, self.value_types = {}, {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            tt = vi.type.tensor_type
            self.value_types[vi.name] = ONNX_DTYPES.get(tt.elem_type, "?")
            if tt.HasField("shape"):
                self.value_shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                                   for d in tt.shape.dim)
        for vi in g.input:
            self.add_tensor(vi.name, ONNX_DTYPES.get(vi.type.tensor_type.elem_type, "?"))
        for t in g.initializer:
            self.add_tensor(t.name, ONNX_DTYPES.get(t.data_type, "?"), tuple(t.dims))
        self.nodes: list[Node] = []

    def add_tensor(self, name, dtype, shape=None, quant=None):
        if shape is None:
            shape = self.value_shapes.get(name)
        self.tensors[name] = Tensor(name, dtype, shape, quant)

    def dtype(self, name) -> str:
        return self.tensors[name].dtype if name in self.tensors else "?"

    def const(self, node, index, what):
        """The constant at input `index` of `node`; an error naming node and input if it is not one."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.constants:
            raise NotConstant(f"node {node.name!r} ({node.op_type}): input {index} {what!r} ({name}) must be a "
                              f"constant initializer")
        return self.constants[name]

    def emit(self, op, name, inputs, outputs, attrs, source):
        self.nodes.append(Node(op, name, tuple(inputs), tuple(outputs), attrs, source))


class NotConstant(NpusimError):
    """An input the integer form needs at plan time is computed at run time."""


def _to_array(t: onnx.TensorProto) -> np.ndarray:
    arr = numpy_helper.to_array(t)
    if t.data_type == onnx.TensorProto.INT4:
        arr = arr.astype(np.int8)
    elif t.data_type == onnx.TensorProto.UINT4:
        arr = arr.astype(np.uint8)
    return arr
