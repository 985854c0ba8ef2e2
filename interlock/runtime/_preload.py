"""What the local launcher's forkserver imports before it forks the ranks (interlock.runtime.launch).

Importing torch here means each rank starts with it loaded (seconds saved per run), its
pages shared with the server. ``gc.freeze()`` then moves every object allocated so far
out of the garbage collector's reach: a collection in a rank would otherwise write to
each of those objects' headers, copying every page of the inherited heap into each rank
(tens of MB per rank of memory that could stay shared).
"""

import gc

import torch  # noqa: F401
import torch._dynamo  # noqa: F401  (imported by the first optimizer construction: seconds)

import interlock  # noqa: F401

gc.freeze()
