"""The one place Numba options are set for every fast kernel.

`njit` compiles with `cache=True` (on-disk cache, so a second process starts warm),
`nogil=True`, and never `fastmath` (integer and float-rounding semantics are exact).
The cache goes to Numba's default location next to the source when that is writable
and otherwise to NUMBA_CACHE_DIR or, if unset, ~/.cache/npusim/numba, so that a
non-editable install into a read-only site-packages still caches.

Threads. The parallel kernels (prange) run on Numba's threading layer, OpenMP where libgomp is
installed. OpenMP's idle workers spin by default after each parallel region, on the cores that
onnxruntime's threads (host islands, or a reference session in the same process) and the Python
between two kernels need: measured on 2 cores, the PP-OCR classifier took 6.1 ms at 2 threads
beside an onnxruntime session against 2.3 ms with passive waiting. So OMP_WAIT_POLICY is PASSIVE
unless the environment sets it (it is read when libgomp loads, which a process that loaded it
before npusim has done: then its setting stays).
"""
import os

import numba

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if not os.environ.get("NUMBA_CACHE_DIR") and not os.access(os.path.dirname(__file__), os.W_OK):
    numba.config.CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "npusim", "numba")

_OPTIONS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


def njit(*args, **kwargs):
    """numba.njit with npusim's fixed options; keyword arguments may add `locals=` etc."""
    opts = dict(_OPTIONS, **kwargs)
    if args and callable(args[0]):
        return numba.njit(**opts)(args[0])
    return numba.njit(*args, **opts)
