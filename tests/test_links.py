"""The emulated slow link (interlock/runtime/links.py): its model, its store-and-forward queue, and both
places it applies (interlock's transport where it sends; the fenced isend patch for pipelining)."""

from __future__ import annotations

import math
import time

import pytest
import torch.distributed as dist

import link_helpers as LH
from interlock._torch_compat import slow_isend_for_pipelining
from interlock.runtime.launch import run_local
from interlock.runtime.links import LinkSender, SlowLink


def test_a_link_holds_latency_plus_bytes_over_bandwidth():
    assert SlowLink(latency_s=0.1, bytes_per_s=1000).hold_s(500) == pytest.approx(0.6)
    assert SlowLink(latency_s=0.25).hold_s(10**9) == 0.25  # bandwidth 0: unlimited
    for bad in ({"latency_s": -1}, {"latency_s": True}, {"latency_s": math.nan}, {"latency_s": 0, "bytes_per_s": -2}):
        with pytest.raises(ValueError, match="give non-negative numbers"):
            SlowLink(**bad)


class _Work:
    def wait(self, timeout=None) -> bool:
        return True

    def is_completed(self) -> bool:
        return True


def test_messages_on_one_link_queue_and_start_in_order_after_their_holds():
    started: list[tuple[str, float]] = []
    sender = LinkSender(SlowLink(latency_s=0.1))
    t0 = time.perf_counter()

    def send(name):
        def go():
            started.append((name, time.perf_counter() - t0))
            return _Work()
        return go

    first = sender.submit(1, 8, [send("a-header"), send("a-payload")])  # one message: one hold for both
    second = sender.submit(1, 8, [send("b")])
    other = sender.submit(2, 8, [send("c")])  # another destination: its own link, no queue behind 1's
    assert time.perf_counter() - t0 < 0.05  # submitting never waits for the link
    for h in [*first, *second, *other]:
        h.wait()
        assert h.is_completed()
    at = dict(started)
    assert [n for n, _ in started if n != "c"] == ["a-header", "a-payload", "b"]
    assert at["a-header"] >= 0.1 and at["b"] >= 0.2  # store and forward: b's hold starts when a has gone
    assert at["a-payload"] < at["b"] - 0.05  # the payload left with its header, not after a hold of its own
    assert 0.1 <= at["c"] < at["b"] - 0.05  # another link: c did not queue behind a


def test_a_failed_send_is_raised_to_whoever_waits_for_it():
    def broken():
        raise RuntimeError("peer gone")

    (h,) = LinkSender(SlowLink(latency_s=0.0)).submit(0, 1, [broken])
    with pytest.raises(RuntimeError, match="peer gone"):
        h.wait()


def test_the_pipelining_patch_is_fenced_to_its_block():
    real = dist.isend
    with pytest.raises(TypeError, match="SlowLink"):
        with slow_isend_for_pipelining(0.5):
            pass
    with pytest.raises(KeyError):
        with slow_isend_for_pipelining(SlowLink(latency_s=0.1)):
            assert dist.isend is not real and dist.distributed_c10d.isend is dist.isend
            raise KeyError("a failing block still restores isend")
    assert dist.isend is real and dist.distributed_c10d.isend is real


def test_the_transport_and_the_pipelining_patch_deliver_late_but_intact():
    latency = 0.4
    sender, receiver = sorted(run_local(LH.sends_over_a_slow_link, 2, latency, timeout_s=120), key=lambda r: r["rank"])
    assert receiver["got"] == [[[float(i)] * 5] * 4 for i in range(LH.MESSAGES)]
    assert sender["send_return_s"] < latency  # the sender never waits for the link
    arrived = [t - sender["start"] for t in receiver["arrived"]]
    for i, t in enumerate(arrived):
        assert t >= (i + 1) * latency - 0.01, arrived  # one message at a time on the link
    # header and payload share one hold: held twice each, the last would arrive at 2.4 s
    assert arrived[-1] < 2 * LH.MESSAGES * latency - 0.4, arrived
    assert sender["patched"] and sender["restored"]
    assert sender["pipe_send_return_s"] < latency and receiver["pipe_got"] == [0.0, 1.0, 2.0]
    assert receiver["pipe_arrived"] - sender["pipe_start"] >= latency - 0.01
