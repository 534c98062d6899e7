"""What onnxruntime code expects around an InferenceSession, for npusim's.

npusim is one execution provider that runs on the CPU: it reports itself as onnxruntime's
"CPUExecutionProvider" (the name onnxruntime code checks for), accepts any providers list (as
onnxruntime does, which falls back to the CPU for providers it does not have) and ignores the
other providers' options. onnxruntime's own SessionOptions and RunOptions are used unchanged.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import NpusimError

PROVIDER = "CPUExecutionProvider"
NO_VERSION = 2**63 - 1  # onnxruntime's model version of a model that states none
ORT_SESSION_KWARGS = ("disabled_optimizers", "read_config_from_model")  # onnxruntime's **kwargs


def get_available_providers() -> list[str]:
    """The execution providers npusim offers: one, running on the CPU."""
    return [PROVIDER]


def provider_options_of(providers, provider_options) -> dict:
    """{provider: options} as onnxruntime's get_provider_options() reports them (npusim's only).

    providers: names, or (name, options) pairs, as onnxruntime takes them; provider_options: one
    dict per name."""
    providers = list(providers or [PROVIDER])
    if provider_options is not None and len(provider_options) != len(providers):
        raise NpusimError(f"provider_options: {len(provider_options)} given for {len(providers)} providers")
    given = {}
    for i, p in enumerate(providers):
        name, opts = (p, provider_options[i] if provider_options else {}) if isinstance(p, str) else tuple(p)
        if not isinstance(name, str) or not isinstance(opts, dict):
            raise NpusimError(f"providers: expected provider names or (name, options) pairs, got {p!r}")
        given[name] = opts
    return {PROVIDER: {str(k): str(v) for k, v in given.get(PROVIDER, {}).items()}}


@dataclass(frozen=True)
class ModelMetadata:
    """onnxruntime's ModelMetadata: what the ONNX model says about itself."""
    producer_name: str = ""
    graph_name: str = ""
    domain: str = ""
    description: str = ""
    graph_description: str = ""
    version: int = 0
    custom_metadata_map: dict = field(default_factory=dict)


def onnx_facts(m) -> tuple[ModelMetadata, dict]:
    """(metadata, {input/output name: shape as onnxruntime shows it}) of a parsed ONNX model.

    onnxruntime shows a fixed dimension as its int, a symbolic one by its name (dim_param, even
    "?") and one with neither as None; a tensor the model gives no shape is left out (onnxruntime
    shows what it infers, as npusim's IR does).
    """
    version = int(m.model_version) if m.HasField("model_version") else NO_VERSION
    meta = ModelMetadata(m.producer_name, m.graph.name, m.domain, m.doc_string, m.graph.doc_string, version,
                         {p.key: p.value for p in m.metadata_props})
    shapes = {vi.name: [d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
                        for d in vi.type.tensor_type.shape.dim]
              for vi in list(m.graph.input) + list(m.graph.output) if vi.type.tensor_type.HasField("shape")}
    return meta, shapes


class Profiler:
    """onnxruntime's profile: Chrome trace events ("ph": "X", times in microseconds) of every
    run ("model_run") and of every step of the plan ("<node>_kernel_time", args.op_name)."""

    def __init__(self, prefix: str):
        self.prefix, self.events, self.t0 = prefix or "onnxruntime_profile_", [], time.perf_counter()
        self.started = time.strftime("%Y-%m-%d_%H-%M-%S")
        self.recording = True  # until end_profiling(), as in onnxruntime

    def event(self, cat: str, name: str, start: float, args: dict) -> None:
        if not self.recording:
            return
        self.events.append({"cat": cat, "pid": os.getpid(), "tid": threading.get_native_id(),
                            "dur": round((time.perf_counter() - start) * 1e6), "ts": round((start - self.t0) * 1e6),
                            "ph": "X", "name": name, "args": args})

    def timed(self, run, node):
        """`run` (a step of the plan) timing itself into the profile under the node's name."""
        name = f"{node.source or node.name}_kernel_time"
        args = {"op_name": node.op, "provider": PROVIDER}

        def timed_run(*xs):
            start = time.perf_counter()
            out = run(*xs)
            self.event("Node", name, start, args)
            return out
        return timed_run

    def write(self) -> str:
        """The profile written (temp file + rename) and recording stopped; -> its file name."""
        from .ir import write_atomic

        path = f"{self.prefix}_{self.started}.json"

        def dump(tmp):
            with open(tmp, "w") as f:
                json.dump(self.events, f, indent=0)
        write_atomic(path, dump)
        self.recording = False
        return path


def to_ort_value(x: np.ndarray):
    import onnxruntime as ort
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x))


def from_ort_value(name: str, v) -> np.ndarray:
    if not hasattr(v, "numpy"):
        raise NpusimError(f"input {name!r}: expected an onnxruntime OrtValue, got {type(v).__name__}")
    if v.device_name().lower() != "cpu":
        raise NpusimError(f"input {name!r}: OrtValue on device {v.device_name()!r}; npusim reads CPU memory only")
    return v.numpy()


class IOBinding:
    """onnxruntime's IOBinding for CPU memory: inputs bound as arrays or OrtValues, outputs by
    name (npusim allocates them) and read back as OrtValues or arrays. Device pointers
    (bind_input with a buffer address) have no meaning for a simulator and are refused."""

    def __init__(self, session):
        self._session, self._inputs, self._outputs, self._values = session, {}, [], None

    def bind_cpu_input(self, name: str, arr) -> None:
        self._inputs[name] = np.asarray(arr)

    def bind_ortvalue_input(self, name: str, ortvalue) -> None:
        self._inputs[name] = from_ort_value(name, ortvalue)

    def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr) -> None:
        raise NpusimError(f"IOBinding.bind_input({name!r}, ...): binding a raw buffer address is not supported "
                          f"by npusim; use bind_cpu_input or bind_ortvalue_input")

    def bind_output(self, name: str, device_type: str = "cpu", device_id: int = 0, element_type=None, shape=None,
                    buffer_ptr=None) -> None:
        if device_type != "cpu" or buffer_ptr is not None:
            raise NpusimError(f"IOBinding.bind_output({name!r}, ...): npusim writes outputs to CPU memory it "
                              f"allocates; device {device_type!r} / a buffer address are not supported")
        self._outputs.append(name)

    def bind_ortvalue_output(self, name: str, ortvalue) -> None:
        raise NpusimError(f"IOBinding.bind_ortvalue_output({name!r}, ...): npusim allocates its outputs; "
                          f"use bind_output({name!r})")

    def clear_binding_inputs(self) -> None:
        self._inputs = {}

    def clear_binding_outputs(self) -> None:
        self._outputs, self._values = [], None

    def synchronize_inputs(self) -> None:
        pass

    def synchronize_outputs(self) -> None:
        pass

    def run(self, run_options=None) -> None:
        self._values = self._session.run(self._outputs or None, self._inputs, run_options)

    def copy_outputs_to_cpu(self) -> list[np.ndarray]:
        if self._values is None:
            raise NpusimError("IOBinding: no outputs yet; call session.run_with_iobinding(binding) first")
        return list(self._values)

    def get_outputs(self) -> list:
        return [to_ort_value(x) for x in self.copy_outputs_to_cpu()]
