"""npusim.backend under ONNX's own backend conformance runner (onnx.backend.test.BackendTest).

Included: every node test case of the quantized and integer ops (qlinearconv, qlinearmatmul_*,
convinteger_*, matmulinteger, quantizelinear_*, dequantizelinear_*, dynamicquantizelinear_*),
run as the runner runs them: scales, zero points and weights arrive as graph inputs, and the
models are at the opset ONNX emits (28 for QuantizeLinear/DequantizeLinear). Expected outputs
are ONNX's own; the runner compares them (integer outputs exactly, dtype included). Every case
runs on npusim's kernels except the three *_expanded DynamicQuantizeLinear cases, whose y_scale is
computed at run time: their arithmetic is a float host island (onnxruntime), as in a deployed model.

Excluded, and why (element types npusim does not model; its tensors are 4/8/16-bit integers,
int32 and float):
  _e4m3fn, _e5m2 (float8), _float4e2m1 (float4), _int2, _uint2 (2-bit integers).
"""
import re
import unittest
import warnings

import numpy as np
import onnx.backend.test
import pytest
from onnx import helper

import npusim.backend
from npusim.errors import NpusimError

INCLUDED = r"^test_(qlinearconv|qlinearmatmul|convinteger|matmulinteger|quantizelinear|dequantizelinear|" \
           r"dynamicquantizelinear)"
EXCLUDED = r"(e4m3fn|e5m2|float4e2m1|_int2|_uint2)"


def _node_cases():
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # other ops' generators overflow casts on purpose
        return [c.name for c in collect_testcases()]


def test_backend_runner_passes_every_included_quantized_node_case():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # other ops' generators overflow casts on purpose
        runner = onnx.backend.test.BackendTest(npusim.backend.NpusimBackend, __name__)
    runner.include(INCLUDED + r".*_cpu$")
    runner.exclude(EXCLUDED)
    result = unittest.TestResult()
    runner.test_suite.run(result)
    problems = [(t.id().split(".")[-1], err.strip().splitlines()[-1]) for t, err in result.failures + result.errors]
    assert problems == []
    ran = result.testsRun - len(result.skipped)
    expected = [n for n in _node_cases() if re.match(INCLUDED, n) and not re.search(EXCLUDED, n)]
    assert ran == len(expected) == 33  # onnx 1.23: 45 cases of these ops, 12 excluded


def test_parameters_given_as_inputs_are_planned_per_value():
    node = helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"])
    x = np.array([0, 1, 2.5, -3, 300], np.float32)
    # y = clamp(round_half_even(x / s) + zp, 0, 255), worked by hand
    (y,) = npusim.backend.run_node(node, [x, np.float32(0.5), np.uint8(10)])
    np.testing.assert_array_equal(y, np.array([10, 12, 15, 4, 255], np.uint8))
    (y,) = npusim.backend.run_node(node, [x, np.float32(0.25), np.uint8(10)])
    np.testing.assert_array_equal(y, np.array([10, 14, 20, 0, 255], np.uint8))
    mm = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    (y,) = npusim.backend.run_node(mm, [np.array([[1, 2]], np.uint8), np.array([[3], [-4]], np.int8)])
    np.testing.assert_array_equal(y, np.array([[-5]], np.int32))
    assert npusim.backend.supports_device("CPU") and not npusim.backend.supports_device("CUDA")
    with pytest.raises(NpusimError, match="device 'CUDA': npusim simulates on the CPU only"):
        npusim.backend.prepare(helper.make_model(helper.make_graph([node], "g", [], [])), "CUDA")
