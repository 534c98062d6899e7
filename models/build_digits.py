"""Train, export and quantize the digits CNN: `python -m npusim_models.build_digits [OUT_DIR]`.

Data: scikit-learn's bundled digits set (1797 8x8 images, pixel values 0..16, 10 classes),
split 80/20 with a fixed seed. The model input is the image divided by 16 (so in [0, 1]),
shape x_nchw [N, 1, 8, 8] float32; the output "logits" is [N, 10].

Network (ReLU after every conv except the residual branch's 1x1, which is added first):

    x[N,1,8,8] -conv3x3 1->16-> a1 -dwconv3x3 16-> a2 -conv1x1 16->16-> z3
    a3 = relu(a1 + z3) -maxpool2x2-> [N,16,4,4] -conv3x3 16->32-> a4[N,32,4,4]
    -GlobalAveragePool-> [N,32,1,1] -Flatten-> [N,32] -Gemm-> logits[N,10]

Training is plain NumPy with hand-written backward passes (Adam, fixed seeds; 15 s on
an idle 2-core machine); no deep-learning framework is needed to rebuild. The float graph is written
with onnx.helper (opset 13), then quantized into the six variants of `_quantize.VARIANTS`
with 256 training images as calibration data. Writes into OUT_DIR (default: models/digits/):
digits_float.onnx, digits_<variant>.onnx and samples.npz (the hold-out images, normalized,
and their labels).
"""
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from npusim_models._quantize import VARIANTS, quantize, save_atomic

SEED = 0
EPOCHS = 30
BATCH = 32
LR = 3e-3
CALIB_IMAGES = 256
HERE = pathlib.Path(__file__).resolve().parent


def load_data():
    """-> (x_train, y_train, x_test, y_test); x float32 [N,1,8,8] = pixels/16, y int64 [N]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(SEED).permutation(len(x))
    n_test = len(x) // 5
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


# ---- layers: forward returns (output, cache), backward returns input gradient (+ param grads) ----

def _windows(x_nchw, k):
    """Zero-pad by k//2 and return the k x k windows: [N, C, H, W, k, k] (a view)."""
    p = k // 2
    xp = np.pad(x_nchw, ((0, 0), (0, 0), (p, p), (p, p)))
    return np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))


def conv_fwd(x, w_oihw, b):
    cols = _windows(x, w_oihw.shape[2])
    return np.einsum("nchwij,ocij->nohw", cols, w_oihw, optimize=True) + b[None, :, None, None], cols


def conv_bwd(dz, x_shape, cols, w_oihw):
    k = w_oihw.shape[2]
    p = k // 2
    dw = np.einsum("nchwij,nohw->ocij", cols, dz, optimize=True)
    db = dz.sum(axis=(0, 2, 3))
    n, c, h, wd = x_shape
    dxp = np.zeros((n, c, h + 2 * p, wd + 2 * p), np.float32)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + h, j:j + wd] += np.einsum("nohw,oc->nchw", dz, w_oihw[:, :, i, j], optimize=True)
    return dxp[:, :, p:p + h, p:p + wd], dw, db


def dwconv_fwd(x, w_c1hw, b):
    cols = _windows(x, w_c1hw.shape[2])
    return np.einsum("nchwij,cij->nchw", cols, w_c1hw[:, 0]) + b[None, :, None, None], cols


def dwconv_bwd(dz, x_shape, cols, w_c1hw):
    k = w_c1hw.shape[2]
    p = k // 2
    dw = np.einsum("nchwij,nchw->cij", cols, dz)[:, None]
    db = dz.sum(axis=(0, 2, 3))
    n, c, h, wd = x_shape
    dxp = np.zeros((n, c, h + 2 * p, wd + 2 * p), np.float32)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + h, j:j + wd] += dz * w_c1hw[None, :, 0, i, j, None, None]
    return dxp[:, :, p:p + h, p:p + wd], dw, db


def maxpool2_fwd(x):
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2)
    y = blocks.max(axis=(3, 5))
    mask = blocks == y[:, :, :, None, :, None]
    mask = mask / mask.sum(axis=(3, 5), keepdims=True)  # ties share the gradient
    return y, mask


def maxpool2_bwd(dy, mask):
    n, c = dy.shape[:2]
    dx = mask * dy[:, :, :, None, :, None]
    return dx.reshape(n, c, dy.shape[2] * 2, dy.shape[3] * 2)


def init_params(rng):
    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "w1": he((16, 1, 3, 3), 9), "b1": np.zeros(16, np.float32),
        "w2": he((16, 1, 3, 3), 9), "b2": np.zeros(16, np.float32),
        "w3": he((16, 16, 1, 1), 16) * 0.5, "b3": np.zeros(16, np.float32),
        "w4": he((32, 16, 3, 3), 144), "b4": np.zeros(32, np.float32),
        "w5": he((10, 32), 32), "b5": np.zeros(10, np.float32),
    }


def forward(p, x):
    """-> (logits [N,10], cache for backward)."""
    z1, c1 = conv_fwd(x, p["w1"], p["b1"])
    a1 = np.maximum(z1, 0)
    z2, c2 = dwconv_fwd(a1, p["w2"], p["b2"])
    a2 = np.maximum(z2, 0)
    z3, c3 = conv_fwd(a2, p["w3"], p["b3"])
    r = a1 + z3
    a3 = np.maximum(r, 0)
    pooled, mask = maxpool2_fwd(a3)
    z4, c4 = conv_fwd(pooled, p["w4"], p["b4"])
    a4 = np.maximum(z4, 0)
    g = a4.mean(axis=(2, 3))
    logits = g @ p["w5"].T + p["b5"]
    return logits, (x, z1, a1, c1, z2, a2, c2, z3, c3, r, pooled, mask, z4, c4, a4, g)


def backward(p, cache, dlogits):
    x, z1, a1, c1, z2, a2, c2, z3, c3, r, pooled, mask, z4, c4, a4, g = cache
    grads = {"w5": dlogits.T @ g, "b5": dlogits.sum(0)}
    dg = dlogits @ p["w5"]
    da4 = np.broadcast_to(dg[:, :, None, None] / (a4.shape[2] * a4.shape[3]), a4.shape)
    dz4 = da4 * (z4 > 0)
    dpooled, grads["w4"], grads["b4"] = conv_bwd(dz4, pooled.shape, c4, p["w4"])
    da3 = maxpool2_bwd(dpooled, mask)
    dr = da3 * (r > 0)
    da2, grads["w3"], grads["b3"] = conv_bwd(dr, a2.shape, c3, p["w3"])
    dz2 = da2 * (z2 > 0)
    da1_dw, grads["w2"], grads["b2"] = dwconv_bwd(dz2, a1.shape, c2, p["w2"])
    dz1 = (dr + da1_dw) * (z1 > 0)
    _, grads["w1"], grads["b1"] = conv_bwd(dz1, x.shape, c1, p["w1"])
    return grads


def train(x, y):
    rng = np.random.default_rng(SEED)
    p = init_params(rng)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    t = 0
    for epoch in range(EPOCHS):
        lr = LR * 0.5 * (1 + np.cos(np.pi * epoch / EPOCHS))  # cosine decay
        order = rng.permutation(len(x))
        for s in range(0, len(x), BATCH):
            idx = order[s:s + BATCH]
            logits, cache = forward(p, x[idx])
            prob = np.exp(logits - logits.max(1, keepdims=True))
            prob /= prob.sum(1, keepdims=True)
            prob[np.arange(len(idx)), y[idx]] -= 1  # d(mean cross-entropy)/dlogits
            grads = backward(p, cache, (prob / len(idx)).astype(np.float32))
            t += 1
            for k in p:  # Adam
                m[k] = 0.9 * m[k] + 0.1 * grads[k]
                v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
                mh, vh = m[k] / (1 - 0.9 ** t), v[k] / (1 - 0.999 ** t)
                p[k] = (p[k] - lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
    return p


def to_onnx(p) -> onnx.ModelProto:
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "w1", "b1"], ["z1"], "conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Relu", ["z1"], ["a1"], "relu1"),
        n("Conv", ["a1", "w2", "b2"], ["z2"], "dwconv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=16),
        n("Relu", ["z2"], ["a2"], "relu2"),
        n("Conv", ["a2", "w3", "b3"], ["z3"], "pwconv3", kernel_shape=[1, 1]),
        n("Add", ["a1", "z3"], ["r"], "residual_add"),
        n("Relu", ["r"], ["a3"], "relu3"),
        n("MaxPool", ["a3"], ["pooled"], "maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["pooled", "w4", "b4"], ["z4"], "conv4", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Relu", ["z4"], ["a4"], "relu4"),
        n("GlobalAveragePool", ["a4"], ["gap"], "gap"),
        n("Flatten", ["gap"], ["flat"], "flatten", axis=1),
        n("Gemm", ["flat", "w5", "b5"], ["logits"], "fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in p.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="npusim_models.build_digits")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def accuracy(model_path, x, y) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return float((sess.run(None, {"input": x})[0].argmax(1) == y).mean())


def build(out_dir=HERE / "digits", log=print) -> dict[str, float]:
    """Train and write every digits file into out_dir; -> {model name: hold-out top-1 accuracy}."""
    out_dir = pathlib.Path(out_dir)
    x_tr, y_tr, x_te, y_te = load_data()
    params = train(x_tr, y_tr)
    logits, _ = forward(params, x_te)
    float_path = save_atomic(to_onnx(params), out_dir / "digits_float.onnx")
    np.savez_compressed(out_dir / "samples.npz", x=x_te, y=y_te)
    acc = {"digits_float": accuracy(float_path, x_te, y_te)}
    log(f"digits_float: numpy acc {float((logits.argmax(1) == y_te).mean()):.4f}, onnxruntime acc {acc['digits_float']:.4f}")
    calib = [{"input": x_tr[i:i + 32]} for i in range(0, CALIB_IMAGES, 32)]
    for variant in VARIANTS:
        name = f"digits_{variant}"
        acc[name] = accuracy(quantize(float_path, out_dir / f"{name}.onnx", variant, calib), x_te, y_te)
        log(f"{name}: acc {acc[name]:.4f}")
    return acc


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else HERE / "digits")
