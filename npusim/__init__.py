"""npusim: simulate the deployment of a quantized ONNX model on an integer NPU, bit for bit."""
from .errors import NpusimError
from .ortcompat import ModelMetadata, get_available_providers
from .session import InferenceSession, NodeArg

_FROM_ONNXRUNTIME = ("SessionOptions", "RunOptions", "GraphOptimizationLevel", "ExecutionMode", "OrtValue")
__all__ = ["InferenceSession", "NodeArg", "NpusimError", "ModelMetadata", "get_available_providers",
           *_FROM_ONNXRUNTIME]
__version__ = "0.1.0"


def __getattr__(name):
    """onnxruntime's SessionOptions, RunOptions and their enums, and OrtValue, which npusim's
    sessions take as they are (imported on first use: onnxruntime is loaded only when needed)."""
    if name in _FROM_ONNXRUNTIME:
        import onnxruntime
        return getattr(onnxruntime, name)
    raise AttributeError(f"module 'npusim' has no attribute {name!r}")
