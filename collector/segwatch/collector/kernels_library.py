"""Finding the compiled loops' library and deciding whether to call it.

:mod:`.kernels` calls the library this module loads, or runs its numpy
formulation when :func:`load` returns None: nothing was built (no C compiler
at install, or ``SEGWATCH_NO_KERNELS=1``), ``SEGWATCH_KERNELS=numpy`` turns it
off, or the file cannot be called safely. The last case is the one to guard
against: in an editable install the library is built once beside
``_kernels.c``, and a ``.so`` older than its source may not take the arguments
today's wrappers pass (undefined behaviour, not an error). So the library says
its interface version (``segwatch_kernels_abi()``) and only :data:`ABI` is
called; any other is logged, naming the file, and left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

__all__ = ["ABI", "LIBRARY", "NUMPY_FORCED", "SIGNATURES", "load"]

_logger = logging.getLogger(__name__)

LIBRARY = Path(
    os.environ.get("SEGWATCH_KERNELS_LIBRARY") or Path(__file__).with_name("_kernels.so")
)
"""Where the build puts the compiled loops (``bench/sanitize.sh`` points elsewhere)."""

ABI = 3
"""The library interface :mod:`.kernels` calls; ``segwatch_kernels_abi()`` in ``_kernels.c``
says which one a build has. Both change together, with any exported function's interface."""

_MODE = os.environ.get("SEGWATCH_KERNELS") or "auto"
if _MODE not in ("auto", "numpy"):
    # Read at import, where raising would turn every command into a traceback: say so, go on.
    _logger.warning("SEGWATCH_KERNELS must be auto or numpy, not %r: using auto", _MODE)
    _MODE = "auto"
NUMPY_FORCED = _MODE == "numpy"
"""``SEGWATCH_KERNELS=numpy`` (the default is ``auto``): never load the compiled loops, as
where none were built (CI runs the collector tests a second time so)."""

SIGNATURES = {
    "segwatch_group_stats": "piipippipipppppp",
    "segwatch_group_entries": "ppiippippiiiiippp",
    "segwatch_walk_fields": "pippiippppp",
    "segwatch_read_key_values": "pippiippppp",
    "segwatch_read_fixed64": "pipip",
    "segwatch_factorize_slices": "pippipp",
}
"""Each exported loop's arguments as ``_kernels.c`` declares them, ``p`` a pointer and ``i`` an
``int64_t`` (``tests/collector/test_kernels.py`` reads the C to check); each returns an
``int64_t``."""


def load() -> ctypes.CDLL | None:
    """The compiled loops, if built, loadable and of :data:`ABI`; else None (numpy runs)."""
    if NUMPY_FORCED or not LIBRARY.exists():
        return None
    try:
        library = ctypes.CDLL(str(LIBRARY))
    except OSError as exc:  # built for another platform, damaged: say so, keep working
        _logger.warning("cannot load %s (%s): using numpy instead, slower", LIBRARY, exc)
        return None
    try:
        abi_of = library.segwatch_kernels_abi
    except AttributeError:  # built before the library said its ABI
        built = "no ABI version"
    else:
        abi_of.restype, abi_of.argtypes = ctypes.c_int64, []
        built = f"ABI {abi_of()}"
    if built != f"ABI {ABI}":
        _logger.warning(
            "%s has %s, not ABI %d (built before its source changed?): using numpy instead, "
            "slower; rebuild it (pip install -e . in a source checkout)",
            LIBRARY,
            built,
            ABI,
        )
        return None
    for name, arguments in SIGNATURES.items():
        try:
            function = getattr(library, name)
        except AttributeError:  # the ABI number says it has it: a build gone wrong
            _logger.warning("%s has no %s: using numpy instead, slower", LIBRARY, name)
            return None
        function.restype = ctypes.c_int64
        function.argtypes = [ctypes.c_void_p if a == "p" else ctypes.c_int64 for a in arguments]
    return library
