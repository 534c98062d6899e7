"""A QDQ model with 4-bit weights: onnxruntime does not fuse DQ(int4) -> Conv -> Q on the CPU,
it computes the convolutions in float; npusim mirrors that, reports them as host ops, and
matches onnxruntime bit for bit (the 4-bit weight DequantizeLinear runs as an integer op)."""
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

import npusim
import npusim_models as zoo
from npusim.verify import verify


def test_int4_weight_qdq_model(tmp_path):

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(zoo.sample_inputs("digits_float", 16, seed=0))

        def get_next(self):
            return next(self.it, None)

    out = tmp_path / "digits_qdq_w4.onnx"
    quantize_static(str(zoo.path("digits_float")), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt4)
    sess = npusim.InferenceSession(out)
    w4 = [t for t in sess.graph.tensors.values() if t.dtype == "i4"]
    assert w4, "the model has no int4 tensor"
    report = verify(out, zoo.sample_inputs("digits_float", 3, seed=4), session=sess)
    assert report.bit_exact
    host = {op.split(":")[0] for op in report.host_ops}
    assert "Conv" in host and "Gemm" in host
    assert all(c.exact == c.elements for c in report.intermediates)
