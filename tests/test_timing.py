"""Action timing on a GPU: CUDA-event marks resolved to seconds once, checked with a fake event."""

from __future__ import annotations

import pytest
import torch

import interlock as il
from interlock.core import schedule as S
from interlock.measure.timing import DeviceClock, HostClock, Mark, clock_for, resolve
from reference import PARTS


class FakeEvent:
    """Stands in for torch.cuda.Event: 'records' the fake GPU time, advanced by each record by 5 ms."""

    gpu_ms = 0.0

    def __init__(self) -> None:
        self.t = None
        self.synced = False

    def record(self) -> None:
        FakeEvent.gpu_ms += 5.0
        self.t = FakeEvent.gpu_ms

    def synchronize(self) -> None:
        self.synced = True

    def elapsed_time(self, other: "FakeEvent") -> float:
        assert other.synced, "elapsed_time needs a completed event"
        return other.t - self.t


def test_host_clock_on_the_cpu_and_marks_resolve_to_anchor_plus_elapsed():
    assert isinstance(clock_for(torch.device("cpu")), HostClock) and isinstance(clock_for(None), HostClock)
    clock = DeviceClock(torch.device("cuda", 0), event_factory=FakeEvent, synchronize=lambda: None)
    a, b = clock.now(), clock.now()
    assert isinstance(a, Mark)
    assert b.seconds() - a.seconds() == pytest.approx(0.005)
    assert a.seconds() == pytest.approx(clock._anchor_host + 0.005)
    assert (a - 2.0).seconds() == pytest.approx(a.seconds() - 2.0)  # rebasing on an epoch


def test_worker_records_device_marks_that_resolve_into_the_trace_format():
    blocks, heads, x, y, loss_fn = PARTS["mlp"](2, seed=0)
    engine = il.Engine(il.ComponentNet(blocks=blocks, heads=heads), il.Interlocking(2),
                                optimizer=lambda p: torch.optim.SGD(p, lr=0.1), loss_fn=loss_fn)
    for w in engine.workers:
        w.clock = DeviceClock(torch.device("cuda", 0), event_factory=FakeEvent, synchronize=lambda: None)
    records = engine.step(x, y).records
    assert records and all(isinstance(r.start_s, Mark) for r in records)
    assert all(r.duration_s == pytest.approx(0.005) for r in records)  # one fake 5 ms tick per action
    floats = resolve(records)
    assert all(isinstance(r.start_s, float) and isinstance(r.end_s, float) for r in floats)
    assert [type(r.action) for r in floats] == [type(r.action) for r in records]
    assert any(isinstance(r.action, S.Update) for r in floats)
    assert resolve(floats) is floats  # already seconds: nothing to do
