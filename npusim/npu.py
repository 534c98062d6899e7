"""Mode "npu": the registry entries whose arithmetic an integer NPU does differently.

Everything here follows docs/npu_arithmetic.md. At plan time the real scales of each node
become fixed-point multipliers (`quantize_multiplier`: an int32 M0 in Q0.31 and a right shift
n), computed in float64 once, as an NPU compiler does; at run time the kernels use integers
only. The ops not listed here (max pool, data movement, the lookup-table ops) are integer
already and keep their mode-"ort" entries; so do 8-bit conv/matmul/gemm accumulations. The
16-bit layers onnxruntime runs in float (npusim.frontend.sixteen) accumulate in int64 and requantize
with TFLite's int64 MultiplyByQuantizedMultiplier, the same under both rounding rules.

WESS: a requantize node with `wess_shift` (per-channel weight scales w_layer·2^-s[c], see
npusim.frontend.convert.wess_shifts_of_scales) gets one per-layer (M0, n) from w_layer and the per-channel right
shifts n + s[c]: the inverse of the equalizing shift is fused into the layer's shift.
"""
from __future__ import annotations

import math

import numpy as np

from dataclasses import replace

from .binding import PerShape, shape_bound
from .ir import Graph, Node, qrange, storage
from .registry import OPS, OpDef, plan_window
from .upsample import conv_transpose_macs, prep_conv_transpose, prep_resize_npu

ROUNDINGS = ("double", "single")


def _f64(v):
    return np.asarray(v, np.float64).reshape(-1)


def requantize_multipliers(attrs: dict, K) -> tuple[np.ndarray, np.ndarray]:
    """(M0[c], n[c]) of a requantize node: per tensor, per channel, or WESS (one M0, n + s[c]).

    real[c] = x_scale·w_scale[c]/y_scale in float64 (QGemm: alpha·a_scale·b_scale[c]/y_scale);
    WESS: one QuantizeMultiplier(x_scale·w_layer/y_scale), w_layer = max w_scale, and
    n[c] = n + s[c]; w_scale[c] must equal w_layer·2^-s[c] exactly (ValueError otherwise).
    """
    xs = _f64(attrs["x_scale"])[0] * (float(attrs["alpha"]) if "alpha" in attrs else 1.0)
    ws, ys = _f64(attrs["w_scale"]), _f64(attrs["y_scale"])[0]
    if "wess_shift" in attrs:
        s = np.asarray(attrs["wess_shift"], np.int32).reshape(-1)
        if s.shape != ws.shape or not np.array_equal(np.ldexp(ws.max(), -s), ws):
            raise ValueError(f"wess_shift {s.tolist()} does not give the weight scales w_layer·2^-s")
        m0, n = K.quantize_multiplier(np.array([xs * ws.max() / ys]))
        return np.full(s.shape, m0[0], np.int32), (n[0] + s).astype(np.int32)
    m0, n = K.quantize_multiplier(xs * ws / ys)
    return np.ascontiguousarray(m0, np.int32), np.ascontiguousarray(n, np.int32)


def _out(a):
    return int(a["y_zp"]), int(a["qmin"]), int(a["qmax"]), storage(a["dtype"])


def ops(rounding: str) -> dict[str, OpDef]:
    """The mode-"npu" registry entries, for one rounding rule ("double" or "single")."""

    def requantize(node, const, K):
        a = node.attrs
        m0, n = requantize_multipliers(a, K)
        axis = int(a["axis"])
        out = _out(a)

        def bind(shape, dtype):
            ax = axis % max(len(shape), 1)
            if dtype == np.int64:  # a 16x8 layer (npusim.frontend.sixteen): TFLite's int64 MBQM, one rounding
                return lambda acc: K.requantize_fixed_i64(acc, m0, n, ax, *out)
            if dtype != np.int32:  # refused by the kernel, naming the dtype
                return lambda acc: K.requantize_fixed(acc, m0, n, ax, *out, rounding)
            return K.requantize_fixed_for(shape, m0, n, ax, *out, rounding)
        per_shape = PerShape(bind)

        def run(acc):
            return (per_shape[acc.shape, acc.dtype](acc),)
        return shape_bound(per_shape, run)

    def wide(op, prepare_i64):
        """The 16x8 accumulator (attrs acc = "i64", npusim.frontend.sixteen) or the op's 8-bit entry."""
        def prepare(node, const, K):
            if node.attrs.get("acc") == "i64":
                return prepare_i64(node, const, K)
            return OPS[op].prepare(node, const, K)
        return OpDef(prepare, OPS[op].macs)

    def binary(kind):
        def prepare(node, const, K):
            a = node.attrs
            scales = (float(a["a_scale"]), float(a["b_scale"]), float(a["y_scale"]))
            params = K.add_params(*scales, K.add_left_shift(storage(a["dtype"]))) if kind == "add" \
                else K.mul_params(*scales)
            bind = getattr(K, f"fixed_{kind}_for")
            az, bz = int(a["a_zp"]), int(a["b_zp"])
            out = _out(a)
            per_shape = PerShape(lambda xs, xt, ys, yt: bind(xs, xt, az, ys, yt, bz, params, *out, rounding))

            def run(x, y):
                return (per_shape[x.shape, x.dtype, y.shape, y.dtype](x, y),)
            return shape_bound(per_shape, run, lambda x, y: (x.shape, x.dtype, y.shape, y.dtype))
        return prepare

    def gap(node, const, K):
        a = node.attrs
        last = int(a.get("channels_last", 0))
        xz = int(a["x_zp"])
        out = _out(a)

        def bind(shape, dtype):  # (M0, n) of the spatial size, known at run time
            params = K.global_avgpool_params(a["x_scale"], a["y_scale"], math.prod(shape[2:]))
            return K.fixed_global_avgpool_for(shape, dtype, xz, *params, *out, rounding)
        per_shape = PerShape(bind)

        if last:
            def run_last(x):
                xt = np.ascontiguousarray(np.moveaxis(x, -1, 1))
                return (np.moveaxis(per_shape[xt.shape, xt.dtype](xt), 1, -1),)
            return run_last

        def run(x):
            return (per_shape[x.shape, x.dtype](x),)
        return shape_bound(per_shape, run)

    def avgpool(node, const, K):
        a = node.attrs
        k = tuple(int(v) for v in a["kernel_shape"])
        window = plan_window(a, k)
        xz = int(a["x_zp"])
        out = _out(a)
        cip, ceil = int(a["count_include_pad"]), int(a["ceil_mode"])
        if float(a["x_scale"]) == float(a["y_scale"]) and xz == out[0]:  # TFLite's AVERAGE_POOL_2D: the codes
            def run_codes(x):
                s, p, _ = window(x.shape[2:])
                return (K.fixed_avgpool_codes(x, xz, k, s, p, cip, ceil, out[1], out[2]).astype(out[3], copy=False),)
            return run_codes
        m0, n = K.avgpool_params(a["x_scale"], a["y_scale"], k)  # one multiplier per possible divisor

        def run(x):
            s, p, _ = window(x.shape[2:])
            return (K.fixed_avgpool(x, xz, k, s, p, cip, ceil, m0, n, *out, rounding),)
        return run

    def softmax(node, const, K):
        a = node.attrs
        params = K.softmax_params(float(a["x_scale"]), float(a["y_scale"]), rounding)
        dt, (lo, hi) = storage(a["dtype"]), qrange(a["dtype"])
        axis, opset = int(a["axis"]), int(a["opset"])

        def run(x):
            ax = axis % x.ndim
            if opset < 13:  # Softmax-1/11: rows are the dimensions from `axis` on, flattened
                rows = x.reshape(int(np.prod(x.shape[:ax])), -1)
                return (K.fixed_softmax(rows, 1, params, int(a["y_zp"]), lo, hi, dt, rounding).reshape(x.shape),)
            return (K.fixed_softmax(x, ax, params, int(a["y_zp"]), lo, hi, dt, rounding),)
        return run

    def qconcat(node, const, K):
        a = node.attrs
        ys, yz = float(a["y_scale"]), int(a["y_zp"])
        dt, (lo, hi) = storage(a["dtype"]), qrange(a["dtype"])
        plans = [K.quantize_multiplier(np.array([float(s) / ys])) for s in a["x_scales"]]
        same = [float(s) == ys and int(z) == yz for s, z in zip(a["x_scales"], a["x_zps"])]

        def run(*xs):
            parts = [x if keep else K.fixed_rescale(x, int(z), int(m0[0]), int(n[0]), yz, lo, hi, dt, rounding)
                     for x, z, (m0, n), keep in zip(xs, a["x_zps"], plans, same)]
            return (np.concatenate(parts, axis=int(a["axis"]) % parts[0].ndim),)
        return run

    return {
        "requantize": OpDef(requantize),
        "conv": wide("conv", _conv_i64),
        "gemm": wide("gemm", _gemm_i64),
        "matmul": wide("matmul", _gemm_i64),
        "add": OpDef(binary("add")),
        "mul": OpDef(binary("mul")),
        "global_avgpool": OpDef(gap, OPS["global_avgpool"].macs),
        "avgpool": OpDef(avgpool, OPS["avgpool"].macs),
        "softmax": OpDef(softmax),
        "qconcat": OpDef(qconcat),
        "resize": OpDef(prep_resize_npu(rounding)),
        "conv_transpose": OpDef(prep_conv_transpose, conv_transpose_macs),
    }


def _constants(node, const, names):
    values = [const(x) if x else None for x in names]
    missing = [x for x, v in zip(names, values) if x and v is None]
    if missing:
        raise ValueError(f"16x8 {node.op}: input {missing[0]!r} must be a constant")
    return values


def _conv_i64(node, const, K):
    """TFLite 16x8 conv (2-D): acc:i64 = Σ (x − x_zp)(w − w_zp[m]) + bias[m] (K.conv_acc_i64)."""
    x_name, w_name, b_name, xzp_name, wzp_name = node.inputs
    w, b, xz, wz = _constants(node, const, (w_name, b_name, xzp_name, wzp_name))
    k = w.shape[2:]
    window = plan_window(node.attrs, k)
    xz = int(np.asarray(xz).reshape(-1)[0]) if xz is not None else 0
    wz = np.zeros(w.shape[0], np.int64) if wz is None else np.asarray(wz, np.int64)
    bias = None if b is None else np.asarray(b, np.int64)
    group = int(node.attrs["group"])

    def run(x, *_):
        s, p, d = window(x.shape[2:])
        return (K.conv_acc_i64(x, xz, w, wz, bias, s, p, d, group),)
    return run


def _gemm_i64(node, const, K):
    """TFLite 16x8 fully connected: acc:i64 = (a − a_zp)(b − b_zp[n]) + C[n], b a constant
    (QLinearMatMul: inputs a, b, a_zp, b_zp; QGemm: a, b, C, a_zp, b_zp with transB)."""
    if node.op == "gemm":
        _, b_name, c_name, azp_name, bzp_name = node.inputs
        b, c, az, bz = _constants(node, const, (b_name, c_name, azp_name, bzp_name))
        b = b.T if int(node.attrs["transB"]) else b
    else:
        _, b_name, azp_name, bzp_name = node.inputs
        (b, az, bz), c = _constants(node, const, (b_name, azp_name, bzp_name)), None
    b = np.ascontiguousarray(b)
    az = 0 if az is None else int(np.asarray(az).reshape(-1)[0])
    bz = np.zeros(b.shape[1], np.int64) if bz is None else np.asarray(bz, np.int64)
    bias = None if c is None else np.asarray(c, np.int64)

    def run(a, *_):
        return (K.matmul_acc_i64(a, az, b, bz, bias),)
    return run


def lower_islands(graph: Graph) -> Graph:
    """Move the global average pools out of host islands onto the NPU.

    onnxruntime's quantizer leaves DequantizeLinear -> f -> {QuantizeLinear -> t_a,
    GlobalAveragePool -> QuantizeLinear -> t_b} in float (MobileNetV3's squeeze-and-excite
    input: hard-swish's division, then the pool). On an NPU the pool reads the quantized t_a:
    the island becomes DequantizeLinear -> f -> QuantizeLinear (a lookup table when f is
    elementwise) and a fixed-point global_avgpool t_a -> t_b. The pool then averages t_a's
    rounded values instead of f's exact ones, which is the NPU's arithmetic, not onnxruntime's.

    First, the 16-bit convs, gemms and matmuls onnxruntime runs in float become TFLite 16x8
    integer layers (npusim.frontend.sixteen.lower).
    """
    from .frontend.sixteen import lower

    graph = lower(graph)
    nodes = []
    for n in graph.nodes:
        nodes.extend(_split_pool(graph, n) if n.op == "host" else [n])
    return replace(graph, nodes=tuple(nodes)) if len(nodes) != len(graph.nodes) else graph


def _split_pool(graph: Graph, node: Node) -> list[Node]:
    import onnx
    from onnx import numpy_helper

    from .islands import pools_of, without_pools

    model = onnx.ModelProto.FromString(node.attrs["model"])
    pools = pools_of(model)
    if not pools:
        return [node]
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    taps = []  # per pool, the QuantizeLinear of its input: t_a, what the NPU's pool reads
    for p in pools:
        q_a = next((q for q in model.graph.node if q.op_type == "QuantizeLinear" and q.input[0] == p.pool.input[0]),
                   None)
        if q_a is None or len(q_a.input) != 3 or any(init.get(x) is None or init[x].size != 1 for x in q_a.input[1:]):
            return [node]
        taps.append(q_a)
    out = [without_pools(graph, node, model, pools, [q_a.output[0] for q_a in taps])]
    for q_a, p in zip(taps, pools):
        y_dtype = graph.tensors[p.quantize.output[0]].dtype
        lo, hi = qrange(y_dtype)
        out.append(Node("global_avgpool", p.pool.name, (q_a.output[0],), (p.quantize.output[0],),
                        {"x_scale": np.float32(init[q_a.input[1]].reshape(-1)[0]),
                         "x_zp": int(init[q_a.input[2]].reshape(-1)[0]),
                         "y_scale": np.float32(p.scale[0]), "y_zp": int(p.zp[0]), "qmin": lo, "qmax": hi,
                         "dtype": y_dtype},
                        p.pool.name))
    return out


def island_table(node: Node, x_dtype: str, K):
    """[table] of a host island that computes hard-swish of one 8-bit tensor with per-tensor
    parameters: DequantizeLinear -> HardSwish -> QuantizeLinear, or the form onnxruntime's optimizer
    rewrites it to, DequantizeLinear -> {HardSigmoid(alpha 1/6, beta 1/2), Mul(x, that)} ->
    QuantizeLinear. Its table is TFLite's integer HARD_SWISH (K.hard_swish_table), the table an
    NPU compiler builds for it; None for any other island (its table is the float function's,
    computed by onnxruntime)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(node.attrs["model"])
    g = model.graph
    ops = [p.op_type for p in g.node]
    if ops not in (["DequantizeLinear", "HardSwish", "QuantizeLinear"],
                   ["DequantizeLinear", "HardSigmoid", "Mul", "QuantizeLinear"]) \
            or any(p.domain not in ("", "ai.onnx") for p in g.node) or len(node.outputs) != 1:
        return None
    dq, *body, q = g.node
    x = dq.output[0]
    if len(body) == 2:
        sig, mul = body
        a = {at.name: helper.get_attribute_value(at) for at in sig.attribute}
        if sig.input[0] != x or np.float32(a.get("alpha", 0.2)) != np.float32(1 / 6) or a.get("beta", 0.5) != 0.5 \
                or sorted(mul.input) != sorted([x, sig.output[0]]):
            return None
    elif body[0].input[0] != x:
        return None
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    params = [init.get(name) for name in (*dq.input[1:3], *q.input[1:3])]
    if len(dq.input) < 3 or len(q.input) < 3 or any(v is None or v.size != 1 for v in params) \
            or q.input[0] != body[-1].output[0] or q.output[0] != node.outputs[0] \
            or x_dtype not in ("u8", "i8") or params[3].dtype != storage(x_dtype):
        return None
    xs, xz, ys, yz = (v.reshape(()) for v in params)
    try:
        return [K.hard_swish_table(np.float32(xs), int(xz), np.float32(ys), int(yz), storage(x_dtype))]
    except ValueError:  # y_scale below x_scale/128: TFLite has no kernel for it; the float function's table
        return None
