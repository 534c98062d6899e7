"""The ONNX front end: a quantized ONNX model (QOperator, QDQ or QONNX) -> the integer IR.

- `reader`: parse and check a model (`read_model`, `onnx_door`), run the fusion of the mode
  (onnxruntime's graph optimizer in mode "ort", the NPU's own pass list `qdq_fusion.PASSES` in
  mode "npu"), convert node by node and merge what has no integer form into host islands
  (`import_onnx`).
- `convert`: one converter per QOperator node (and data movement on codes); `context`: what the
  converters share.
- `qdq_fusion`, `qdq_upsample`: mode "npu"'s QDQ fusion passes, ModelProto -> ModelProto;
  `sixteen`: 16-bit activation layers as TFLite's 16x8 kernels compute them.
- `qonnx`, `qonnx_fold`: QONNX (Brevitas, FINN, QKeras exports).

Layering: context <- convert <- (qonnx, sixteen) <- reader; nothing here imports the runtime.
"""
from .context import ELEMENTWISE_OPS, ImportContext, NotConstant, onnx_dtype
from .reader import (BITS_KEY, import_onnx, optimize_like_onnxruntime, read_model, with_extra_outputs,
                     with_onnxruntime_types)

__all__ = ["BITS_KEY", "ELEMENTWISE_OPS", "ImportContext", "NotConstant", "import_onnx", "onnx_dtype",
           "optimize_like_onnxruntime", "read_model", "with_extra_outputs", "with_onnxruntime_types"]
