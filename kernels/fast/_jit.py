"""The one place Numba options are set for every fast kernel.

`njit` compiles with `cache=True` (on-disk cache, so a second process starts warm),
`nogil=True`, and never `fastmath` (integer and float-rounding semantics are exact).
The cache goes to Numba's default location next to the source when that is writable
and otherwise to NUMBA_CACHE_DIR or, if unset, ~/.cache/npusim/numba, so that a
non-editable install into a read-only site-packages still caches.
"""
import os

import numba

if not os.environ.get("NUMBA_CACHE_DIR") and not os.access(os.path.dirname(__file__), os.W_OK):
    numba.config.CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "npusim", "numba")

_OPTIONS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


def njit(*args, **kwargs):
    """numba.njit with npusim's fixed options; keyword arguments may add `locals=` etc."""
    opts = dict(_OPTIONS, **kwargs)
    if args and callable(args[0]):
        return numba.njit(**opts)(args[0])
    return numba.njit(*args, **opts)
