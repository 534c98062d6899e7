"""The `npusim quantize` command line: its choices (which npusim.quantize also checks its
arguments against) and its parser. Kept apart from npusim.quantize so that building the CLI's
parser does not import onnx (a second of start-up for every other command); npusim.cli runs it."""

SCHEMES = ("per-tensor", "per-channel", "wess")
CALIBRATIONS = ("minmax", "percentile", "entropy")
FORMATS = ("qdq", "qoperator")
ACTIVATION_TYPES = ("u8", "s8")
BITS = range(2, 9)


def register(subparsers):
    """Add the `quantize` command to the npusim CLI's subparsers; returns its parser (npusim.cli
    sets the function that runs it)."""
    q = subparsers.add_parser("quantize", help="post-training quantization of a float ONNX model (QDQ or QOperator)")
    q.add_argument("model", metavar="FLOAT.onnx", help="the float model")
    q.add_argument("-o", "--output", metavar="OUT.onnx", required=True,
                   help="the quantized model; the npusim IR goes beside it (.npz)")
    q.add_argument("--calib", metavar="DATA.npz", required=True,
                   help="calibration inputs: an .npz of arrays keyed by input name (or, for a model of one "
                        "input, one .npy array), first axis = samples")
    q.add_argument("--scheme", default="per-channel", choices=SCHEMES, help="weight scales (default per-channel)")
    q.add_argument("--wbits", type=int, default=8, choices=BITS, metavar="2..8", help="weight bits (default 8)")
    q.add_argument("--abits", type=int, default=8, choices=BITS, metavar="2..8", help="activation bits (default 8)")
    q.add_argument("--calibration", default="minmax", choices=CALIBRATIONS, help="range estimation (default minmax)")
    q.add_argument("--format", default="qdq", choices=FORMATS, help="ONNX quantization format (default qdq)")
    q.add_argument("--activation-type", default="u8", choices=ACTIVATION_TYPES, help="activation type (default u8)")
    q.add_argument("--layer-bits", metavar="FILE.json",
                   help='per-layer bits {"layer": {"wbits": b, "abits": b}} (mixed precision)')
    q.add_argument("--no-progress", action="store_true", help="no calibration progress bar")
    return q
