"""onnxruntime code runs unchanged with npusim substituted for onnxruntime.

The snippets follow onnxruntime's Python API documentation (InferenceSession with SessionOptions
and providers, run with RunOptions and keyword names, lists as feeds, model metadata, profiling,
OrtValues, IOBinding); each runs once with `rt = onnxruntime` and once with `rt = npusim`, and
the results must be equal (outputs bit for bit: the digits model is integer end to end and
npusim reproduces this CPU's onnxruntime).
"""
import json

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper

import npusim
import npusim_models as zoo
from npusim.errors import NpusimError

MODEL = str(zoo.path(zoo.DEFAULT))


def documented_usage(rt, model, x, tmp_path):
    """What a user writes from onnxruntime's docs; returns everything it observes."""
    so = rt.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / rt.__name__)
    sess = rt.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    seen = {"inputs": [(i.name, i.shape, i.type) for i in sess.get_inputs()],
            "outputs": [(o.name, o.shape, o.type) for o in sess.get_outputs()],
            "providers": sess.get_providers(), "provider_options": sess.get_provider_options(),
            "overridable": sess.get_overridable_initializers(),
            "threads": sess.get_session_options().intra_op_num_threads}
    meta = sess.get_modelmeta()
    seen["meta"] = (meta.producer_name, meta.graph_name, meta.domain, meta.description, meta.version,
                    meta.custom_metadata_map)
    seen["run"] = sess.run([out.name], {inp.name: x}, rt.RunOptions())[0]
    seen["keywords"] = sess.run(output_names=None, input_feed={inp.name: x}, run_options=None)[0]
    seen["list"] = sess.run(None, {inp.name: x.tolist()})[0]
    ort_out = sess.run_with_ort_values([out.name], {inp.name: onnxruntime.OrtValue.ortvalue_from_numpy(x)})
    seen["ort_values"] = ort_out[0].numpy()
    binding = sess.io_binding()
    binding.bind_cpu_input(inp.name, x)
    binding.bind_output(out.name)
    sess.run_with_iobinding(binding)
    seen["iobinding"] = binding.copy_outputs_to_cpu()[0]
    profile = json.loads(open(sess.end_profiling()).read())
    seen["profile_runs"] = sum(e["name"] == "model_run" for e in profile)
    seen["profile_has_nodes"] = any(e["cat"] == "Node" and e["ph"] == "X" and e["dur"] >= 0 for e in profile)
    sess.run(None, {inp.name: x})
    seen["after_end_profiling"] = sess.end_profiling()  # profiling has ended: ""
    return seen


def test_documented_usage_gives_the_same_results(tmp_path):
    x = zoo.sample_inputs(zoo.DEFAULT, 1)[0]["input"]
    want = documented_usage(onnxruntime, MODEL, x, tmp_path)
    got = documented_usage(npusim, MODEL, x, tmp_path)
    assert want.keys() == got.keys()
    for key in want:
        if isinstance(want[key], np.ndarray):
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        else:
            assert got[key] == want[key], key
    assert got["profile_runs"] == 5  # run x3, run_with_ort_values, run_with_iobinding


def test_dynamic_dimensions_shown_as_onnxruntime_shows_them():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "?", None])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, ["N", 3, "?", None])
    x.type.tensor_type.shape.dim[3].Clear()  # a dimension with neither a value nor a name
    y.type.tensor_type.shape.dim[3].Clear()
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.5])
    g = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s"], ["y"])], "g", [x], [y], [scale])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    want = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    got = npusim.InferenceSession(model)
    for w, g_ in ((want.get_inputs(), got.get_inputs()), (want.get_outputs(), got.get_outputs())):
        assert [(a.name, a.shape, a.type) for a in g_] == [(a.name, a.shape, a.type) for a in w]
    assert got.get_inputs()[0].shape == ["N", 3, "?", None]
    feed = [[[[1.0, 2.0]] * 2] * 3]  # a list, converted to the input's float32 as onnxruntime does
    np.testing.assert_array_equal(got.run(None, {"x": feed})[0], want.run(None, {"x": feed})[0])


def test_session_options_positional_and_npusim_options_keyword_only():
    so = npusim.SessionOptions()
    so.intra_op_num_threads = 2
    sess = npusim.InferenceSession(MODEL, so, ["CPUExecutionProvider"], mode="npu", rounding="single")
    assert (sess.mode, sess.rounding, sess.threads) == ("npu", "single", 2)
    assert npusim.InferenceSession(MODEL, so, threads=1).threads == 1  # npusim's own keyword wins
    with pytest.raises(NpusimError, match="sess_options: expected an onnxruntime.SessionOptions, got str"):
        npusim.InferenceSession(MODEL, "npu")
    with pytest.raises(NpusimError, match="unknown keyword argument 'rounding_mode'"):
        npusim.InferenceSession(MODEL, rounding_mode="single")
    opts = npusim.InferenceSession(MODEL, providers=[("CPUExecutionProvider", {"arena_extend_strategy": 1})])
    assert opts.get_provider_options() == {"CPUExecutionProvider": {"arena_extend_strategy": "1"}}
    assert npusim.get_available_providers() == ["CPUExecutionProvider"]
    assert npusim.InferenceSession(MODEL).end_profiling() == ""
    binding = sess.io_binding()
    with pytest.raises(NpusimError, match="raw buffer address is not supported"):
        binding.bind_input("input", "cpu", 0, np.float32, [1], 0)
