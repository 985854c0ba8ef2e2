"""What the processes spawned by tests/test_links.py run (module level, so "spawn" can import it)."""

from __future__ import annotations

import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d

from interlock._torch_compat import slow_isend_for_pipelining
from interlock.runtime.links import SlowLink
from interlock.runtime.transport import TorchDistributedTransport

MESSAGES = 3


def sends_over_a_slow_link(latency_s: float) -> dict:
    """Rank 0 sends MESSAGES tensors over a transport with a slow link, then one bare ``dist.isend``
    inside the pipelining patch; rank 1 notes when each arrives (wall clock, shared by both ranks)."""
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    transport = TorchDistributedTransport(timeout_s=30, link=SlowLink(latency_s=latency_s) if rank == 0 else None)
    dist.barrier()
    out: dict = {"rank": rank}
    if rank == 0:
        out["start"] = time.time()
        for i in range(MESSAGES):
            transport.send(torch.full((4, 5), float(i)), src=0, dst=1, tag=("activation", i))
        out["send_return_s"] = time.time() - out["start"]
        transport.flush()
    else:
        out["got"], out["arrived"] = [], []
        for i in range(MESSAGES):
            out["got"].append(transport.recv(src=0, dst=1, tag=("activation", i)).tolist())
            out["arrived"].append(time.time())
    dist.barrier()
    if rank == 0:
        real = dist.isend
        with slow_isend_for_pipelining(SlowLink(latency_s=latency_s)):
            out["patched"] = dist.isend is not real and c10d.isend is dist.isend
            out["pipe_start"] = time.time()
            work = dist.isend(torch.arange(3.0), dst=1)
            out["pipe_send_return_s"] = time.time() - out["pipe_start"]
            work.wait()
        out["restored"] = dist.isend is real and c10d.isend is real
    else:
        t = torch.empty(3)
        dist.recv(t, src=0)
        out["pipe_got"], out["pipe_arrived"] = t.tolist(), time.time()
    dist.barrier()
    dist.destroy_process_group()
    return out
