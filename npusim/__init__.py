"""npusim: simulate the deployment of a quantized ONNX model on an integer NPU, bit for bit."""
from .errors import NpusimError
from .session import InferenceSession, NodeArg

__all__ = ["InferenceSession", "NodeArg", "NpusimError"]
__version__ = "0.1.0"
