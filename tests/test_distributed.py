"""The distributed engines against the simulated engine: gloo on CPU, one thread per process.

Starting processes and process groups costs time on a small machine, so each K gets ONE
run of K processes (a module-scoped fixture) that runs every scenario for that K; the
tests then compare what each rank returned with the simulated engine, computed here in
the parent process. The failure tests start their own small runs.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

import interlock as il
from interlock.core import schedule as S
from interlock.runtime.launch import RankFailedError, run_local
from interlock.runtime.transport import TransportError

import dist_helpers as H

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="this PyTorch build has no torch.distributed")

SEEDS = {2: 21, 3: 31, 4: 41}
PIPELINE_CASES = {2: [("gpipe", 2), ("1f1b", 4), ("zb1p", 4)], 4: [("gpipe", 4), ("1f1b", 4), ("zb1p", 4)]}
SLEEP_S, AHEAD_STEPS = 0.1, 4
DROPOUT_STEPS, DROPOUT_RNG_SEED = 2, 7
EMU_UNIT_S, EMU_MICROBATCHES, EMU_STEPS = 0.2, 2, 3


def _scenarios(K: int) -> list[tuple[str, str, tuple]]:
    seed = SEEDS[K]
    out = [("bn", "train_strategies", (K, "bn", seed)), ("dropout", "train_strategies", (K, "dropout", seed, DROPOUT_STEPS, DROPOUT_RNG_SEED))]
    if K == 2:
        out.append(("ahead", "run_ahead", (SLEEP_S, AHEAD_STEPS)))
        out.append(("transport", "transport_round_trip", ()))
        out.append(("pipeline-bn", "pipeline_bn_counts", (K, seed, 2)))
    if K == 3:
        out.append(("resume", "resume", (K, seed)))
    out.append(("micro", "train_microbatched", (K, seed)))
    if K == 4:
        out.append(("emulated-micro", "emulated_makespan", (K, EMU_UNIT_S, EMU_MICROBATCHES, EMU_STEPS)))
    for schedule, mb in PIPELINE_CASES.get(K, []):
        out.append((f"pipeline-{schedule}", "pipeline", (K, seed, schedule, mb)))
    return out


@pytest.fixture(scope="module", params=[2, 3, 4], ids=lambda K: f"K{K}")
def spawned(request):
    """(K, per-rank results) of one spawn of K processes running every scenario for K."""
    K = request.param
    return K, run_local(H.rank_main, K, K, _scenarios(K), timeout_s=180)


# -- the simulated engine, in this process --------------------------------------------------


def simulate(K: int, parts: str, seed: int, strategy, *, steps: int = H.STEPS, **opts):
    net, x, y, loss_fn, opts = H.case_net(parts, K, seed, opts)
    engine = il.Engine(net, strategy, optimizer=H.sgd, loss_fn=loss_fn, **opts)
    losses = [engine.step(bx, by).losses for bx, by in H.batches_for(x, y, steps)]
    return net, losses, engine, x


def component_state(net: il.ComponentNet, k: int) -> dict[str, torch.Tensor]:
    out = {f"block.{n}": t for n, t in net.blocks[k].state_dict().items()}
    if net.heads[k] is not None:
        out.update({f"head.{n}": t for n, t in net.heads[k].state_dict().items()})
    return out


def same_floats(a, b) -> bool:
    """Equal lists of floats, NaN equal to NaN (a component without a head has a NaN loss)."""
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


def assert_bitwise_equal(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys(), what
    for key in want:
        assert torch.equal(got[key], want[key]), f"{what}: {key} differs by {(got[key].double() - want[key].double()).abs().max()}"


# -- distributed == simulated ---------------------------------------------------------------


@pytest.mark.parametrize("parts", ["bn", "dropout"])
def test_distributed_equals_simulated_bit_for_bit(spawned, parts):
    K, ranks = spawned
    seed = SEEDS[K]
    steps, rng_seed = (H.STEPS, None) if parts == "bn" else (DROPOUT_STEPS, DROPOUT_RNG_SEED)
    for name, strategy, opts in H.strategy_cases(K):
        net, losses, _, _ = simulate(K, parts, seed, strategy, steps=steps, rng_seed=rng_seed, **opts)
        for k in range(K):
            got = ranks[k][parts][name]
            assert_bitwise_equal(got["state"], component_state(net, k), f"K={K} {parts} {name} component {k + 1}")
            # Own loss exactly; NaN where another rank's loss would be (no collective per step).
            assert same_floats([l[k] for l in got["losses"]], [l[k] for l in losses]), (name, k)
            assert all(math.isnan(l[j]) for l in got["losses"] for j in range(K) if j != k)
            # gather_losses fills in every component's loss of that step, on every rank.
            assert same_floats(got["gathered"], losses[-1]), (name, k)


def test_heads_forward_and_all_reduce_match(spawned):
    K, ranks = spawned
    name, strategy, _ = H.strategy_cases(K)[1]  # local: every head trained
    net, _, _, x = simulate(K, "bn", SEEDS[K], strategy)
    net.eval()
    with torch.no_grad():
        want = net.heads_forward(x)
    for k in range(K):
        assert torch.equal(ranks[k]["bn"][name]["prediction"], want[k]), k
        assert ranks[k]["bn"][name]["rank_sum"] == K * (K + 1) / 2


def test_messages_match_the_simulated_transport_and_local_sends_no_streams(spawned):
    K, ranks = spawned
    for name, strategy, opts in H.strategy_cases(K):
        _, _, sim, _ = simulate(K, "bn", SEEDS[K], strategy, **opts)
        sent = sum((Counter(r["bn"][name]["sent_by_kind"]) for r in ranks), Counter())
        eval_messages = K - 1  # heads_forward sends one activation across each boundary
        assert sent.pop("eval_activation") == eval_messages
        assert sent == sim.runtime.channel.sent_by_kind, name
        assert sum(r["bn"][name]["received"] for r in ranks) == sim.runtime.channel.messages_sent + eval_messages
        if name == "local":
            assert sent["stream"] == 0 and sent["activation"] == (K - 1) * H.STEPS
        # Static shapes: one header per (channel, tag), sent with its first message; without, one per message.
        headers = [r["bn"][name]["headers"] for r in ranks]
        if name == "local":
            assert headers == [1] * (K - 1) + [0]
        if name == "local headers":
            assert headers == [H.STEPS] * (K - 1) + [0]
        # Receives posted ahead: from the second step on every receive is (first steps carry the headers).
        posted = sum(r["bn"][name]["posted_ahead"] for r in ranks)
        received = sum(r["bn"][name]["received"] for r in ranks) - eval_messages
        if name == "local headers":
            assert posted == 0
        elif received:
            assert received * (H.STEPS - 1) / H.STEPS <= posted < received, (name, posted, received)


def test_records_follow_the_schedule_on_a_common_clock(spawned):
    K, ranks = spawned
    plan = il.EndToEnd().plan(K)
    for k in range(K):
        kinds = [a.kind for a in S.build_schedule(plan, k, has_head=True)]
        for step in ranks[k]["bn"]["end-to-end"]["records"]:
            assert [kind for kind, _, _ in step] == kinds
            times = [t for _, s, e in step for t in (s, e)]
            assert times == sorted(times) and times[0] >= 0.0  # seconds since the common epoch
    # Times are comparable across ranks: component k+1 receives an activation only after k began sending it.
    slack_s = 0.5  # the epoch barrier releases ranks within a scheduling delay of each other
    for k in range(K - 1):
        for lo, hi in zip(ranks[k]["bn"]["end-to-end"]["records"], ranks[k + 1]["bn"]["end-to-end"]["records"]):
            send = next(s for kind, s, _ in lo if kind == "SendActivation")
            received = next(e for kind, _, e in hi if kind == "RecvActivation")
            assert received >= send - slack_s


# -- micro-batches ------------------------------------------------------------------------------


def test_microbatched_distributed_equals_simulated_and_the_whole_batch(spawned):
    # Micro-batched on K processes: bit for bit the simulated engine with the same micro-batches
    # (same worker, same order), and the whole-batch engine to float rounding (a mean of micro-batch means).
    K, ranks = spawned
    seed = SEEDS[K]
    for name, strategy, opts, heads_none in H.microbatch_cases(K):
        blocks, heads, x, y, loss_fn = H.micro_parts(K, seed, heads_none)
        whole_net = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
        whole = il.Engine(whole_net, strategy, optimizer=H.sgd, loss_fn=loss_fn, **opts)
        whole_losses = [whole.step(bx, by).losses for bx, by in H.batches_for(x, y, H.MICRO_STEPS)]
        for m in H.MICROBATCHES:
            net = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
            sim = il.Engine(net, strategy, optimizer=H.sgd, loss_fn=loss_fn, microbatches=m, **opts)
            losses = [sim.step(bx, by).losses for bx, by in H.batches_for(x, y, H.MICRO_STEPS)]
            for k in range(K):
                got = ranks[k]["micro"][name, m]
                what = f"K={K} {name} m={m} component {k + 1}"
                assert_bitwise_equal(got["state"], component_state(net, k), what)
                nan_is_nan = lambda rows: [None if math.isnan(l[k]) else l[k] for l in rows]  # noqa: E731
                assert nan_is_nan(got["losses"]) == nan_is_nan(losses), what
                for key, want in component_state(whole_net, k).items():
                    torch.testing.assert_close(got["state"][key], want, rtol=1e-5, atol=1e-6, msg=lambda s: f"{what} {key}: {s}")
                for l, w in zip(got["losses"], whole_losses):
                    assert (math.isnan(l[k]) and math.isnan(w[k])) or abs(l[k] - w[k]) <= 1e-5, what


@pytest.mark.parametrize("spawned", [4], indirect=True, ids=["K4"])
def test_clock_predicts_a_microbatched_emulated_run(spawned):
    # Emulated sleeps on 4 processes, 2 micro-batches: the critical-path prediction from the
    # schedules and the emulated costs is within 10% of the measured makespan.
    K, ranks = spawned
    from interlock.timemodel.emulate import emulated_costs

    costs = emulated_costs(forward_s=EMU_UNIT_S, backward_s=EMU_UNIT_S).per_microbatch(EMU_MICROBATCHES)
    for name, strategy in (("2-wise", il.Interlocking(2)), ("end-to-end", il.EndToEnd())):
        plan = strategy.plan(K)
        schedules = [S.build_schedule(plan, k, has_head=True, microbatches=EMU_MICROBATCHES) for k in range(K)]
        predicted = il.clock.predict(schedules, costs, steps=EMU_STEPS).makespan_s
        spans = [r["emulated-micro"][name] for r in ranks]
        measured = max(end for _, end in spans) - min(start for start, _ in spans)
        print(f"{name}: measured {measured:.3f} s, predicted {predicted:.3f} s")
        assert abs(measured - predicted) <= 0.1 * predicted, (name, measured, predicted)


# -- pipelining ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spawned", [2], indirect=True, ids=["K2"])
def test_local_runs_ahead_and_end_to_end_waits(spawned):
    K, ranks = spawned
    fast, slow = ranks[0]["ahead"], ranks[1]["ahead"]
    sleeping = SLEEP_S * AHEAD_STEPS
    assert slow["local"] >= sleeping and slow["end-to-end"] >= sleeping
    # Local: component 1 never waits for component 2, so it finishes long before it.
    assert fast["local"] < slow["local"] - sleeping / 2, (fast, slow)
    # End-to-end: component 1 needs component 2's gradient every step.
    assert fast["end-to-end"] >= sleeping


# -- checkpoints ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spawned", [3], indirect=True, ids=["K3"])
def test_resume_from_component_states_equals_uninterrupted(spawned):
    K, ranks = spawned
    net, losses, engine, _ = simulate(K, "dropout", SEEDS[K], il.Interlocking(2), steps=4, rng_seed=5, lr_scheduler=H.step_lr)
    for k in range(K):
        got = ranks[k]["resume"]
        assert got["step_after_load"] == 2
        assert_bitwise_equal(got["resumed_state"], got["full_state"], f"component {k + 1} resumed")
        assert got["tail_losses"] == got["full_losses"][2:]
        assert got["lr"] == got["full_lr"] == engine.optimizers[k].param_groups[0]["lr"]
        # And the uninterrupted run is the simulated engine's (dropout masks, LR schedule and all).
        assert_bitwise_equal(got["full_state"], component_state(net, k), f"component {k + 1}")
        assert got["full_losses"] == [l[k] for l in losses]


# -- torch.distributed.pipelining ---------------------------------------------------------------


@pytest.mark.parametrize("spawned", sorted(PIPELINE_CASES), indirect=True, ids=lambda K: f"K{K}")
def test_pipeline_engine_equals_simulated_end_to_end(spawned):
    # mlp parts: no BatchNorm, so the mean of the micro-batch losses has the full-batch
    # gradient (BatchNorm would normalise each micro-batch with its own statistics).
    K, ranks = spawned
    seed = SEEDS[K]
    blocks, heads, x, y, loss_fn = H.PARTS["mlp"](K, seed=seed)
    net = il.ComponentNet(blocks=blocks, heads=[None] * (K - 1) + [heads[-1]])  # the pipeline trains no aux head
    sim = il.Engine(net, il.EndToEnd(), optimizer=H.sgd, loss_fn=loss_fn)
    losses = [sim.step(bx, by).losses[-1] for bx, by in H.batches_for(x, y, 2)]
    with torch.no_grad():
        want_prediction = net(x)
    for schedule, _ in PIPELINE_CASES[K]:
        for k in range(K):
            got = ranks[k][f"pipeline-{schedule}"]
            want = component_state(net, k)
            assert got["state"].keys() == want.keys()
            for key in want:  # equal up to float rounding (a mean of micro-batch means)
                torch.testing.assert_close(got["state"][key], want[key], msg=lambda m: f"{schedule} {k} {key}: {m}")
            assert all(math.isnan(l[j]) for l in got["losses"] for j in range(K) if j != K - 1 or k != K - 1)
        torch.testing.assert_close(torch.tensor([l[-1] for l in ranks[-1][f"pipeline-{schedule}"]["losses"]]), torch.tensor(losses))
        torch.testing.assert_close(ranks[-1][f"pipeline-{schedule}"]["prediction"], want_prediction)
        assert all(ranks[k][f"pipeline-{schedule}"]["prediction"] is None for k in range(K - 1))


@pytest.mark.parametrize("spawned", [2], indirect=True, ids=["K2"])
def test_pipeline_stages_get_static_shapes_so_batchnorm_runs_once_per_microbatch(spawned):
    # PyTorch's shape inference would run an extra forward (on empty tensors past stage 1),
    # polluting BatchNorm's running statistics; static shapes avoid it.
    K, ranks = spawned
    assert [r["pipeline-bn"] for r in ranks] == [2, 2]


# -- the transport ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spawned", [2], indirect=True, ids=["K2"])
def test_transport_delivers_any_layout_and_dtype(spawned):
    K, ranks = spawned
    got = ranks[1]["transport"]
    sent = H.transport_payloads()
    assert len(got) == len(sent)
    # Dense tensors keep their layout (channels_last stays channels_last, a transpose stays
    # transposed); the strided slice (case 2) arrives contiguous.
    strides = [t.stride() for t in sent]
    strides[2] = sent[2].contiguous().stride()
    for i, (want, (t, stride)) in enumerate(zip(sent, got)):
        assert t.dtype == want.dtype and t.shape == want.shape and torch.equal(t, want), i
        assert stride == strides[i], i
    assert got[0][0].is_contiguous(memory_format=torch.channels_last) and not got[0][0].is_contiguous()


def test_a_tag_mismatch_is_a_loud_error_on_the_receiver():
    with pytest.raises(TransportError, match=r"component 2 expected \('stream', 0, 0\) from component 1 but received \('activation',\)"):
        run_local(H.tag_mismatch, 2, timeout_s=60)


# -- lifecycle and failures -------------------------------------------------------------------------


def test_engine_creates_and_destroys_its_process_group_and_keeps_one_component():
    ranks = run_local(H.engine_lifecycle, 2, timeout_s=60)
    assert [r["during"] for r in ranks] == [True, True]
    assert [r["after"] for r in ranks] == [False, False]
    assert [r["kept"] for r in ranks] == [[True, False], [False, True]]


def test_an_explicit_gloo_backend_on_the_cpu_and_bad_backends_are_refused_before_joining():
    ranks = run_local(H.with_backend, 2, "2-wise", None, "gloo", timeout_s=60)
    blocks, heads, x, y, loss_fn = H.PARTS["mlp"](2, seed=7)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    sim = il.Engine(net, il.Interlocking(2), optimizer=H.sgd, loss_fn=loss_fn)
    for bx, by in H.batches_for(x, y):
        sim.step(bx, by)
    for k, got in enumerate(ranks):
        assert got["backend"] == "gloo" and not got["staged"] and got["device"] == "cpu"
        assert_bitwise_equal(got["state"], component_state(net, k), f"component {k + 1}")
    # Refused in this process, before any process group is looked for.
    def make(**kw):
        b, h, *_ = H.PARTS["mlp"](2, seed=0)
        return il.Engine(il.ComponentNet(blocks=b, heads=h), il.Local(), runtime="ranks", optimizer=H.sgd,
                                    loss_fn=torch.nn.functional.cross_entropy, **kw)

    with pytest.raises(ValueError, match=r"backend='mpi': use 'nccl' \(one GPU per rank\), 'gloo'"):
        make(backend="mpi")
    with pytest.raises(ValueError, match=r"backend='nccl' needs device='cuda'"):
        make(backend="nccl")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device='cuda', but this process sees no CUDA device"):
            make(device="cuda", backend="gloo")


def test_ranks_find_their_gpu_one_each_over_nccl_or_in_turn_over_gloo(monkeypatch):
    # The device rule, with a pretend node of 1 GPU (no GPU is touched): NCCL gives local rank r
    # GPU r, so a second rank is refused with what to change; gloo shares the GPU.
    from interlock.runtime.ranks import _resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert _resolve_device("cuda") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert _resolve_device("cuda", shared=True) == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"local rank 1 and the node has 1 GPU\(s\).*dist_backend=gloo"):
        _resolve_device("cuda")
    assert _resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit index is kept
    assert _resolve_device(None) == torch.device("cpu")


def test_world_size_must_equal_the_number_of_components():
    with pytest.raises(ValueError, match=r"the network has 3 components but 2 processes were started.*nproc-per-node=3"):
        run_local(H.wrong_world_size, 2, timeout_s=60)


def test_a_stuck_rank_fails_its_peer_at_the_process_group_timeout():
    start = time.monotonic()
    with pytest.raises(TransportError, match=r"component 1 waiting for \('stream', 1, 0\) from component 2"):
        run_local(H.hang_on_rank_1, 2, 2.0, timeout_s=60, grace_s=1.0)
    assert 2.0 <= time.monotonic() - start < 20


def test_a_rank_that_dies_without_an_exception_is_named():
    with pytest.raises(RankFailedError, match="rank 1 of 2 exited with code 3"):
        run_local(H.die_on_rank_1, 2, timeout_s=60)


def test_run_local_times_out():
    with pytest.raises(TimeoutError, match=r"ranks \[0, 1\] of 2 were still running"):
        run_local(H.hang_on_rank_1, 2, 30.0, timeout_s=3)


def test_a_failing_rank_ends_the_run_with_its_own_error():
    start = time.monotonic()
    with pytest.raises(ValueError, match="deliberate failure on rank 1 at step 2") as info:
        run_local(H.fail_mid_run, 3, 1, 2, 4, timeout_s=60)
    elapsed = time.monotonic() - start
    # Spawning three processes takes a few seconds here; the failure itself ends the run at once
    # (the peers see the closed connection), well within the engine's 10 s timeout.
    assert elapsed < 30, elapsed
    assert "Traceback on rank 1 of 3" in str(info.value.__cause__)
    assert "fail_mid_run" in str(info.value.__cause__)
    assert any("raised on rank 1 of 3" in note for note in getattr(info.value, "__notes__", ["raised on rank 1 of 3"]))


# -- the local launcher's lifetime bounds its ranks' (issue 11, items 2 and 3) ------------------------


TESTS = Path(__file__).resolve().parent

from interlock.runtime.procs import descendants  # noqa: E402


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's bookkeeping is left


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_ranks_die_with_a_launcher_killed_by_sigkill(tmp_path):
    script = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import dist_helpers as H; "
              f"from interlock.runtime.launch import run_local; run_local(H.record_pid_and_sleep, 2, {str(tmp_path)!r})")
    launcher = subprocess.Popen([sys.executable, "-c", script])
    pids = []
    try:
        wait_until(lambda: all((tmp_path / f"rank{r}.pid").exists() for r in range(2)), 90, "both ranks to start")
        pids = [int((tmp_path / f"rank{r}.pid").read_text()) for r in range(2)]
        launcher.kill()  # SIGKILL: no handler, no finally, nothing of the launcher runs
        launcher.wait()
        wait_until(lambda: not any(running(p) for p in pids), 10, f"ranks {pids} to exit after their launcher died")
    finally:
        launcher.kill()
        kill_all(pids)


def test_sigterm_stops_every_rank_keeps_the_newest_checkpoint_and_no_run_is_cut_at_dist_timeout(tmp_path):
    # A healthy distributed run outlives dist_timeout_s (which bounds a silent peer, not the run),
    # and SIGTERM to the launcher stops all of it cleanly, leaving a checkpoint that resumes.
    from interlock.training.checkpoint import latest_checkpoint
    from interlock.app.cli import main
    from interlock.training.metrics import read_metrics

    run_dir = tmp_path / "run"
    timeout_s = 4
    cmd = [sys.executable, "-m", "interlock", "train", "--quiet", "--engine", "distributed", "--strategy", "local",
           "--steps", "100000", "--run-dir", str(run_dir), "data.name=digits", "data.batch_size=32",
           "data.eval_batch_size=200", "model.name=toy_cnn_strided", "model.components=2", "threads=1", "log_every=5", "checkpoint_every=10",
           f"dist_timeout_s={timeout_s}"]
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ranks = set()
    try:
        def steps() -> int:
            try:  # (the file may be empty, or end in a line being written)
                return max([0] + [r["step"] for r in read_metrics(run_dir)])
            except (OSError, ValueError):
                return 0

        wait_until(lambda: steps() > 0 or launcher.poll() is not None, 120, "the first metrics")
        trained_from = time.monotonic()
        wait_until(lambda: time.monotonic() - trained_from > 2 * timeout_s or launcher.poll() is not None,
                   4 * timeout_s, "the run to train past dist_timeout_s")
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        before = steps()
        wait_until(lambda: steps() > before, 30, "more steps")  # still training, not stuck
        wait_until(lambda: latest_checkpoint(run_dir) is not None, 60, "a checkpoint")
        ranks = descendants(launcher.pid)
        assert len(ranks) >= 2  # two ranks (and the forkserver they were forked from)
        launcher.send_signal(signal.SIGTERM)
        _, err = launcher.communicate(timeout=60)
        assert launcher.returncode == 143, err[-3000:]
        assert "interlock: terminated" in err and "the newest checkpoint it wrote, if any, is kept" in err and "Traceback" not in err
        wait_until(lambda: not any(running(p) for p in ranks), 10, f"processes {sorted(ranks)} to exit")
    finally:
        launcher.kill()
        kill_all(ranks)
    step = json.loads((latest_checkpoint(run_dir) / "meta.json").read_text())["step"]
    assert main(["train", "--quiet", "--resume", "--run-dir", str(run_dir), f"steps={step + 2}", "engine=simulated"]) == 0
    assert max(r["step"] for r in read_metrics(run_dir)) == step + 2


def test_a_rank_failing_while_its_peers_train_is_reported_at_once_with_its_own_error(tmp_path):
    # Rank 1's loss turns NaN at step 7 while rank 0 trains on (local learning). Rank 1 must not
    # sit in the engine's closing barrier until dist_timeout_s, and the report must be its own
    # error, not the closed connection it leaves rank 0 with.
    from interlock.training.config import load_config
    from interlock.training.loop import TrainingDiverged

    cfg = load_config(None, ["data.name=digits", "data.batch_size=32", "model.name=toy_cnn_strided", "model.components=2", "strategy=local",
                             "steps=200", "log_every=5", "engine=distributed", "dist_timeout_s=60", "threads=1",
                             f"run_dir={tmp_path / 'run'}"])
    start = time.monotonic()
    with pytest.raises(TrainingDiverged, match=r"loss of component 2 is nan at step 7") as info:
        run_local(H.train_with_nan_on_rank_1, 2, cfg.to_dict(), 7, timeout_s=120)
    assert time.monotonic() - start < 40  # spawning and data take seconds; nothing waits for the 60 s timeout
    # (Losses are read at log rows, not every step: the NaN of step 7 is caught at the row of step 10,
    # and the failure names step 7, the step it happened at, not two steps; issue 21, item 8.)
    assert (info.value.rank, info.value.world_size) == (1, 2) and info.value.where == "training step 7"
    assert info.value.component == 2 and info.value.run == str(tmp_path / "run")
