"""Raw memory for the instant tier: a float64 array seen through its address.

The virtual machine is compiled once for every graph, so it cannot take a different number of
array arguments per graph. It takes one int64 array of buffer addresses instead (numexpr passes
pointers the same way) and views each as an array here. The caller keeps the arrays alive for the
call and guarantees that each is C-contiguous float64 with at least ``n`` elements.
"""

from __future__ import annotations

from numba import carray, njit, types
from numba.extending import intrinsic

_FLOAT_POINTER = types.CPointer(types.float64)


@intrinsic
def _pointer(typingctx, address):
    """The ``double*`` at an integer address."""
    signature = _FLOAT_POINTER(types.int64)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(_FLOAT_POINTER))

    return signature, codegen


@njit(cache=True, inline="always")
def as_array(address, n):
    """The ``n`` float64 values at ``address`` as a 1-d array (no copy)."""
    return carray(_pointer(address), n)
