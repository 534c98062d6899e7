"""ONNX's own backend node test cases for the quantized/integer ops, through npusim, both kernel sets.

Every case of onnx.backend.test.case.node whose name starts with qlinearconv, qlinearmatmul,
convinteger, matmulinteger, quantizelinear, dequantizelinear or dynamicquantizelinear runs
through npusim.InferenceSession with kernels "fast" and "golden"; outputs must equal ONNX's
expected outputs exactly (float outputs of DequantizeLinear included).

4-bit outputs are compared in their 8-bit storage (npusim.ir.storage); 4-bit feeds are given as
onnx.numpy_helper returns them (ml_dtypes int4/uint4) and npusim converts them.
The *_expanded DynamicQuantizeLinear cases compute y_scale at run time, so their QuantizeLinear
runs on the host (onnxruntime); the float16 QLinearMatMul cases get float16 -> float32 Casts of
the scales from onnxruntime's optimizer, which npusim folds.

Two adaptations, neither changing what the node computes:
- Inputs after the first become initializers, as weights, scales and zero points are in a
  deployed model: npusim plans weights and quantization parameters once and requires them
  constant (the first input stays a graph input fed at run time).
- ONNX emits the cases at the op's newest opset. QuantizeLinear/DequantizeLinear-28 only add
  float6 types to opset 25, and onnxruntime 1.32 implements them up to 25, so a case that
  onnxruntime refuses is retried at each older opset of the op under which ONNX's checker
  still accepts the node unchanged, newest first.

Skipped, and why (one line each):
  element types npusim does not support (storage of the IR is 4/8-bit integer, i32, float):
    test_quantizelinear_e4m3fn, test_quantizelinear_e5m2 ............ float8 e4m3fn / e5m2
    test_dequantizelinear_e4m3fn, _e4m3fn_float16, _e4m3fn_zero_point  float8 e4m3fn
    test_dequantizelinear_e5m2 ........................................ float8 e5m2
    test_quantizelinear_float4e2m1, test_dequantizelinear_float4e2m1 .. float4 e2m1
    test_quantizelinear_int2/_uint2, test_dequantizelinear_int2/_uint2  2-bit integers
  onnxruntime cannot load the model at any opset (npusim raises NpusimError):
    (none left after the opset retargeting; the skip reason quotes onnxruntime if one appears)
"""
import re
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import npusim
import npusim.backend

OPS = ("qlinearconv", "qlinearmatmul", "convinteger", "matmulinteger", "quantizelinear", "dequantizelinear",
       "dynamicquantizelinear")
UNSUPPORTED_TYPES = {
    TensorProto.FLOAT8E4M3FN: "float8 e4m3fn", TensorProto.FLOAT8E5M2: "float8 e5m2",
    TensorProto.FLOAT4E2M1: "float4 e2m1", TensorProto.INT2: "int2", TensorProto.UINT2: "uint2",
}


def _collect():
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # other ops' generators overflow casts on purpose
        cases = collect_testcases()
    pattern = re.compile(rf"test_({'|'.join(OPS)})")
    return {c.name: c for c in cases if pattern.match(c.name)}


CASES = _collect()


def _array(x):
    return numpy_helper.to_array(x) if isinstance(x, TensorProto) else np.asarray(x)


def _with_constant_parameters(case):
    """The case's model with inputs 1.. as initializers, and the feed of input 0."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, outputs = case.data_sets[0]
    g = model.graph
    names = [vi.name for vi in g.input]
    for name, x in zip(names[1:], inputs[1:]):
        t = onnx.TensorProto()
        t.CopyFrom(x) if isinstance(x, TensorProto) else t.CopyFrom(numpy_helper.from_array(x))
        t.name = name
        g.initializer.append(t)
    del g.input[1:]
    return model, {names[0]: _array(inputs[0])}, [_in_storage(_array(y)) for y in outputs]


def _in_storage(y):
    """npusim returns 4-bit tensors in their 8-bit storage (npusim.ir.storage)."""
    return y.astype({"int4": np.int8, "uint4": np.uint8}[y.dtype.name]) if y.dtype.name in ("int4", "uint4") else y


def _at_opset_onnxruntime_runs(model):
    """`model`, or the same node at the newest older opset of its op that onnxruntime loads."""
    try:
        return npusim.backend.at_opset_onnxruntime_loads(model)
    except npusim.NpusimError as e:
        pytest.skip(str(e))


def _unsupported_type(model):
    g = model.graph
    types = [vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.output)]
    return next((UNSUPPORTED_TYPES[t] for t in types if t in UNSUPPORTED_TYPES), None)


@pytest.mark.parametrize("kernels", ["golden", "fast"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_node_case(name, kernels):
    case = CASES[name]
    unsupported = _unsupported_type(case.model)
    if unsupported:
        pytest.skip(f"npusim does not support {unsupported} tensors")
    model, feeds, expected = _with_constant_parameters(case)
    model = _at_opset_onnxruntime_runs(model)
    sess = npusim.InferenceSession(model.SerializeToString(), kernels=kernels)
    got = sess.run(None, feeds)
    assert len(got) == len(expected)
    for y, want in zip(got, expected):
        assert y.dtype == want.dtype, f"{name}: dtype {y.dtype}, expected {want.dtype}"
        np.testing.assert_array_equal(y, want)


def test_all_op_families_are_collected():
    for op in OPS:
        assert any(n.startswith(f"test_{op}") for n in CASES), op
