"""One-op int8 .tflite models, written without TensorFlow, for LiteRT's reference kernels.

The flatbuffer is built with the schema classes that `ai-edge-litert` ships
(ai_edge_litert.schema_py_generated, object API) and `flatbuffers`. A model has one operator,
int8 activations with per-tensor quantization, and optional constant inputs (MEAN's axes).
`run_reference(model, feeds)` runs it with LiteRT's reference kernels (BUILTIN_REF).
"""
import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter, OpResolverType

_TYPES = {np.dtype(np.int8): fb.TensorType.INT8, np.dtype(np.int32): fb.TensorType.INT32}


def _tensor(name, shape, dtype, buffer, q=None):
    t = fb.TensorT()
    t.name, t.shape, t.type, t.buffer = name, list(shape), _TYPES[np.dtype(dtype)], buffer
    if q is not None:
        t.quantization = fb.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [float(q[0])], [int(q[1])]
    return t


def one_op(op, inputs, output, options=None, options_type=0):
    """The .tflite bytes of one `op` (a BuiltinOperator name).

    inputs: list of (shape, (scale, zp)) for int8 activations, or a numpy array for a constant
    input (stored in the model, unquantized); output: (shape, (scale, zp)). options: the op's
    options object (e.g. fb.Pool2DOptionsT()) with its BuiltinOptions type number.
    """
    buffers = [fb.BufferT()]  # buffer 0: the empty one activations use
    tensors, op_inputs = [], []
    for i, x in enumerate(inputs):
        if isinstance(x, np.ndarray):
            b = fb.BufferT()
            b.data = list(x.tobytes())
            buffers.append(b)
            tensors.append(_tensor(f"c{i}", x.shape, x.dtype, len(buffers) - 1))
        else:
            tensors.append(_tensor(f"x{i}", x[0], np.int8, 0, x[1]))
        op_inputs.append(i)
    tensors.append(_tensor("y", output[0], np.int8, 0, output[1]))
    code = fb.OperatorCodeT()
    code.builtinCode = getattr(fb.BuiltinOperator, op)
    code.deprecatedBuiltinCode = min(code.builtinCode, 127)
    operator = fb.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, op_inputs, [len(tensors) - 1]
    operator.builtinOptionsType, operator.builtinOptions = options_type, options
    graph = fb.SubGraphT()
    graph.tensors, graph.operators = tensors, [operator]
    graph.inputs = [i for i, x in enumerate(inputs) if not isinstance(x, np.ndarray)]
    graph.outputs = [len(tensors) - 1]
    model = fb.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [graph], buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def run_reference(model, feeds):
    """LiteRT's reference kernels (BUILTIN_REF) on `model` (bytes): the output for the int8 feeds
    (in the order of the model's inputs)."""
    it = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    for detail, x in zip(it.get_input_details(), feeds):
        it.set_tensor(detail["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])
