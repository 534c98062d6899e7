"""npusim as an ONNX backend (onnx.backend.base.Backend), so onnx.backend.test.BackendTest runs it.

    import npusim.backend
    outputs = npusim.backend.run_model(model, [x, x_scale, x_zero_point])

npusim plans weights, scales and zero points once, as a deployed model has them: a graph input
that a node reads at a position other than its first (a weight, a scale, a zero point, the
second operand of a MatMulInteger) is a *parameter*. The backend writes the values it is given
for the parameters into the model as initializers and plans that model; it plans again only
when a parameter's value changes (one plan per set of values, cached). What npusim computes is
therefore what it computes for a deployed model with those constants; the first inputs of the
nodes are fed at run time.

onnxruntime 1.32 implements QuantizeLinear/DequantizeLinear up to opset 25 while ONNX emits
opset 28, which only adds float types to them; npusim's importer runs the model through
onnxruntime's optimizer, so a model onnxruntime refuses is retargeted to the newest older
default-domain opset at which ONNX's full checker still accepts it unchanged and onnxruntime
loads it (older versions in which any of its ops changed, newest first; none if the checker
refuses: the model's meaning would change).

Outputs come in the element type the model declares: 4-bit tensors as ml_dtypes int4/uint4
(npusim computes them in 8-bit storage).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.backend.base import Backend, BackendRep

from .errors import NpusimError
from .session import InferenceSession

_FOUR_BIT = {TensorProto.INT4: "int4", TensorProto.UINT4: "uint4"}


def onnxruntime_refuses(model: onnx.ModelProto) -> str | None:
    """onnxruntime's first error line when it cannot load `model`, else None."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return None
    except Exception as e:
        return str(e).splitlines()[0]


def at_opset_onnxruntime_loads(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model`, or the same graph at the newest older default-domain opset at which ONNX's full
    checker accepts it unchanged and onnxruntime loads it; NpusimError if there is none."""
    refused = onnxruntime_refuses(model)
    if refused is None:
        return model
    opset = next((o for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise NpusimError(f"onnxruntime cannot load the model: {refused}")
    ops = {(n.op_type, n.domain or "") for n in model.graph.node}
    versions = sorted({s.since_version for s in onnx.defs.get_all_schemas_with_history()
                       if (s.name, s.domain) in ops and s.since_version < opset.version}, reverse=True)
    for v in versions:
        older = onnx.ModelProto()
        older.CopyFrom(model)
        next(o for o in older.opset_import if o.domain == opset.domain).version = v
        try:
            onnx.checker.check_model(older, full_check=True)
        except Exception:
            break  # a node is not valid at this opset: its meaning would change
        if onnxruntime_refuses(older) is None:
            return older
    raise NpusimError(f"onnxruntime cannot load the model at opset {opset.version} or any older opset its "
                      f"nodes are valid at: {refused}")


def parameter_inputs(model: onnx.ModelProto) -> list[str]:
    """The graph inputs some node reads at a position other than its first (see the module doc)."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi.name for vi in model.graph.input if vi.name not in inits]
    later = {name for n in model.graph.node for name in n.input[1:]}
    return [name for name in inputs if name in later]


class NpusimRep(BackendRep):
    """A prepared model: run(inputs) with inputs in the order of the graph's inputs (or a dict)."""

    def __init__(self, model: onnx.ModelProto, **session_kwargs):
        self.model, self.session_kwargs, self._plans = model, session_kwargs, {}
        inits = {t.name for t in model.graph.initializer}
        self.inputs = [vi.name for vi in model.graph.input if vi.name not in inits]
        self.parameters = parameter_inputs(model)
        self.out_types = [o.type.tensor_type.elem_type for o in model.graph.output]
        if not self.parameters:
            self._session({})

    def _session(self, params: dict) -> InferenceSession:
        key = tuple((k, v.dtype.str, v.shape, v.tobytes()) for k, v in sorted(params.items()))
        if key not in self._plans:
            m = onnx.ModelProto()
            m.CopyFrom(self.model)
            g = m.graph
            for name, value in params.items():
                g.initializer.append(numpy_helper.from_array(value, name))
            kept = [vi for vi in g.input if vi.name not in params]
            del g.input[:]
            g.input.extend(kept)
            self._plans[key] = InferenceSession(at_opset_onnxruntime_loads(m).SerializeToString(),
                                                **self.session_kwargs)
        return self._plans[key]

    def run(self, inputs, **kwargs) -> tuple:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            inputs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(inputs) != len(self.inputs):
                raise NpusimError(f"{len(inputs)} inputs given; the model's are: {', '.join(self.inputs)}")
            feeds = dict(zip(self.inputs, inputs))
        feeds = {k: numpy_helper.to_array(v) if isinstance(v, TensorProto) else v for k, v in feeds.items()}
        params = {k: np.asarray(feeds.pop(k)) for k in self.parameters if k in feeds}
        outs = self._session(params).run(None, feeds)
        return tuple(_declared(y, t) for y, t in zip(outs, self.out_types))


def _declared(y: np.ndarray, elem_type: int) -> np.ndarray:
    """`y` in the element type the model declares (4-bit outputs leave their 8-bit storage)."""
    if elem_type in _FOUR_BIT:
        import ml_dtypes
        return y.astype(getattr(ml_dtypes, _FOUR_BIT[elem_type]))
    return y


class NpusimBackend(Backend):
    """onnx.backend.base.Backend over npusim.InferenceSession; keyword arguments of prepare,
    run_model and run_node that are npusim's session options (mode, kernels, rounding, ...)
    go to the session."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> NpusimRep:
        if not cls.supports_device(device):
            raise NpusimError(f"device {device!r}: npusim simulates on the CPU only")
        onnx.checker.check_model(model)
        return NpusimRep(model, **_session_options(kwargs))

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs, device: str = "CPU", outputs_info=None, **kwargs) -> tuple:
        """One node as a one-node model (opset_version= picks its opset, default the newest)."""
        inputs = [np.asarray(x) for x in inputs]
        names = [n for n in node.input]
        vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
               for n, x in zip(names, inputs) if n]
        outs = [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in node.output]
        if outputs_info:
            outs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(t)), s)
                    for n, (t, s) in zip(node.output, outputs_info)]
        opset = kwargs.pop("opset_version", onnx.defs.onnx_opset_version())
        model = helper.make_model(helper.make_graph([node], "node", vis, outs),
                                  opset_imports=[helper.make_opsetid(node.domain or "", opset)])
        model = onnx.shape_inference.infer_shapes(model)
        rep = NpusimRep(model, **_session_options(kwargs))
        return rep.run([x for n, x in zip(names, inputs) if n])

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() == "CPU"


_SESSION_OPTIONS = ("mode", "kernels", "rounding", "engine", "ort_isa", "threads")


def _session_options(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k in _SESSION_OPTIONS}


prepare = NpusimBackend.prepare
run_model = NpusimBackend.run_model
run_node = NpusimBackend.run_node
supports_device = NpusimBackend.supports_device
