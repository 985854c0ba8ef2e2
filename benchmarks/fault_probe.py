"""Fault cases against every engine, as a user would meet them: one line per (engine, case).

Each case starts ``interlock train`` as a command (on the bundled digits data, seconds per run),
does the fault to it for real, and checks what the README's "When a run goes wrong" promises:

* ``kill -9 rank``: SIGKILL one rank of a multi-process run: every process ends within seconds,
  one line names the rank; ``--resume`` finishes the run;
* ``kill -9 launcher``: SIGKILL the command itself (one-process engines: the only process): no
  rank outlives it; ``--resume`` finishes (its stale lock is replaced);
* ``SIGTERM``: exit 143 with the newest checkpoint kept; ``--resume`` finishes;
* ``stopped peer``: SIGSTOP one rank: the others give up after ``dist_timeout_s`` naming it;
* ``damaged checkpoint``: the newest checkpoint's component_2.pt truncated: ``--resume`` names it
  and continues from the older complete one;
* ``read-only dir``: the run directory on a read-only bind mount: one line, "cannot write";
* ``full disk``: the run directory on a tmpfs too small for the first checkpoint: one line,
  "disk full", no half-written file left;
* ``two runs``: a second run into a directory in use: refused naming the first's pid; the first
  finishes with its own rows only.

The read-only and full-disk cases mount file systems, so they need root (otherwise: "skipped").

    python benchmarks/fault_probe.py [--engines simulated:2-wise,distributed:async-local] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ["data.name=digits", "data.batch_size=32", "data.eval_batch_size=200", "data.val_size=100",
        "model.name=toy_cnn_strided", "model.components=3", "optim.lr=0.05", "eval_every=0", "threads=1"]
ENGINES = ["simulated:2-wise", "simulated:async-local", "simulated:sequential", "distributed:2-wise",
           "distributed:async-local", "distributed:hogwild", "pipeline:end-to-end"]
LONG = ["--steps", "3000", "log_every=10", "checkpoint_every=20"]  # long enough to be stopped mid-run


def command(engine: str, strategy: str, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "interlock", "train", "--quiet", *BASE, "--engine", engine, "--strategy", strategy,
            "--run-dir", str(run_dir), *extra]


def start(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        _, err = p.communicate()
        return 124, err
    return p.returncode, err


def error_line(err: str) -> str:
    return next((l for l in err.splitlines() if l.startswith("interlock: error:")), "")


def wait_until(cond, timeout: float = 120) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def checkpointed(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "latest").exists()


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def ranks(launcher: int) -> list[int]:
    """The rank processes: the forkserver's children (the forkserver is the launcher's child with children)."""
    for c in children(launcher):
        grand = children(c)
        if grand:
            return sorted(grand)
    return []


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(pid)
    return out


def resume(engine, strategy, run_dir, steps_more: int = 20) -> tuple[int, str]:
    step = json.loads((run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip() / "meta.json").read_text())["step"]
    return finish(start([sys.executable, "-m", "interlock", "train", "--quiet", "--resume", "--run-dir", str(run_dir),
                         f"steps={step + steps_more}"]))


# -- the cases: each returns (ok, what happened) ---------------------------------------------------------


def case_kill_rank(engine, strategy, d):
    p = start(command(engine, strategy, d, *LONG))
    if not wait_until(lambda: checkpointed(d) and len(ranks(p.pid)) == 3):
        return False, "no ranks seen"
    victim = ranks(p.pid)[-1]
    others = [r for r in ranks(p.pid) if r != victim]
    t0 = time.time()
    os.kill(victim, signal.SIGKILL)
    code, err = finish(p)
    wait_until(lambda: not alive(others), 10)
    took = time.time() - t0
    line = error_line(err)
    rc, _ = resume(engine, strategy, d)
    ok = code == 1 and "signal 9" in line and not alive(others) and rc == 0
    return ok, f"exit {code} after {took:.1f} s, {len(alive(others))} rank(s) left, '{line[17:120]}...'; resume exit {rc}"


def case_kill_launcher(engine, strategy, d):
    p = start(command(engine, strategy, d, *LONG))
    multi = engine != "simulated"
    if not wait_until(lambda: checkpointed(d) and (not multi or len(ranks(p.pid)) == 3)):
        return False, "did not start"
    procs = descendants(p.pid)
    t0 = time.time()
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    wait_until(lambda: not alive(procs), 15)
    took = time.time() - t0
    left = alive(procs)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    rc, err = resume(engine, strategy, d)
    ok = not left and rc == 0 and not list(d.rglob(".*.tmp*"))
    return ok, (f"{len(procs)} child process(es) gone in {took:.1f} s, {len(left)} left; resume exit {rc} "
                f"(stale lock replaced: {'stale lock' in err})")


def case_sigterm(engine, strategy, d):
    p = start(command(engine, strategy, d, *LONG))
    if not wait_until(lambda: checkpointed(d)):
        return False, "did not start"
    procs = descendants(p.pid)
    os.kill(p.pid, signal.SIGTERM)
    code, err = finish(p, 60)
    wait_until(lambda: not alive(procs), 15)
    rc, _ = resume(engine, strategy, d)
    ok = code == 143 and not alive(procs) and rc == 0
    return ok, f"exit {code}, {len(alive(procs))} process(es) left; resume exit {rc}"


def case_stopped_peer(engine, strategy, d):
    p = start(command(engine, strategy, d, *LONG, "dist_timeout_s=5"))
    if not wait_until(lambda: checkpointed(d) and len(ranks(p.pid)) == 3):
        return False, "no ranks seen"
    victim = ranks(p.pid)[1]
    t0 = time.time()
    os.kill(victim, signal.SIGSTOP)
    code, err = finish(p, 120)
    took = time.time() - t0
    try:
        os.kill(victim, signal.SIGKILL)
    except ProcessLookupError:
        pass
    line = error_line(err)
    ok = code == 1 and ("dist_timeout_s" in line or "timed out" in line.lower()) and took < 5 + 30
    return ok, f"exit {code} after {took:.1f} s (dist_timeout_s=5): '{line[17:150]}...'"


def case_damaged(engine, strategy, d):
    code, err = finish(start(command(engine, strategy, d, "--steps", "40", "log_every=10", "checkpoint_every=10")))
    folder = d / "checkpoints" / (d / "checkpoints" / "latest").read_text().strip()
    target = folder / "component_2.pt"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    rc, err = finish(start([sys.executable, "-m", "interlock", "train", "--quiet", "--resume", "--run-dir", str(d), "steps=50"]))
    log = "".join(p.read_text() for p in d.glob("log*.txt"))  # (a rank logs to log-rank<r>.txt)
    ok = code == 0 and rc == 0 and f"{target} is damaged" in log and "newest checkpoint that could be read" in log
    return ok, f"first exit {code}; resume exit {rc}, log names {target.relative_to(d)}: {f'{target} is damaged' in log}"


def _mount(*args) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def case_read_only(engine, strategy, d):
    if os.geteuid() != 0:
        return None, "skipped (needs root to mount)"
    d.mkdir(parents=True)
    if not (_mount("--bind", str(d), str(d)) and _mount("-o", "remount,bind,ro", str(d))):
        return None, "skipped (mount refused)"
    try:
        code, err = finish(start(command(engine, strategy, d / "run", "--steps", "4")))
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)
    line = error_line(err)
    ok = code == 1 and "cannot write" in line and "Traceback" not in err and len(err.strip().splitlines()) <= 3
    return ok, f"exit {code}: '{line[17:140]}'"


def case_full_disk(engine, strategy, d):
    if os.geteuid() != 0:
        return None, "skipped (needs root to mount)"
    probe = d.parent / f"{d.name}-size"
    finish(start(command(engine, strategy, probe, "--steps", "4", "checkpoint_every=2")))
    ckpt = sum(p.stat().st_size for p in (probe / "checkpoints").rglob("*.pt")) // 2  # one checkpoint of the two kept
    rest = sum(p.stat().st_size for p in probe.rglob("*") if p.is_file() and "checkpoints" not in p.parts)
    d.mkdir(parents=True)
    size = ((rest + ckpt // 2) // 4096 + 2) * 4096  # the run's other files fit, its checkpoint does not
    if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)):
        return None, "skipped (mount refused)"
    try:
        code, err = finish(start(command(engine, strategy, d, "--steps", "4", "checkpoint_every=2")))
        left = [p.name for p in d.rglob(".*.tmp*")]
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)
    line = error_line(err)
    ok = code == 1 and "disk full" in line and not left and "bug worth reporting" not in line
    return ok, f"exit {code} on a {size // 1024} KiB disk, temporaries left {left}: '{line[17:140]}'"


def case_two_runs(engine, strategy, d):
    # (optim.lr=0.01: Hogwild's stale gradients diverged at lr 0.05 within 200 steps)
    first = start(command(engine, strategy, d, "--steps", "200", "log_every=10", "checkpoint_every=50", "optim.lr=0.01"))
    lock = d / ".interlock.lock"
    if not wait_until(lock.exists):
        return False, "no lock seen"
    code2, err2 = finish(start(command(engine, strategy, d, "--steps", "10", "log_every=5")))
    code1, _ = finish(first)
    rows = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "train"]
    # The first run's rows only, in order (async DGL may read batches past its steps: rows after 200).
    own = steps == sorted(set(steps)) and steps[:20] == list(range(10, 201, 10))
    ok = code2 == 2 and f"pid {first.pid}" in error_line(err2) and code1 == 0 and own
    return ok, f"second exit {code2} naming pid {first.pid}: {f'pid {first.pid}' in err2}; first exit {code1}, its rows only: {own}"


CASES = {
    "kill -9 rank": (case_kill_rank, True), "kill -9 launcher": (case_kill_launcher, False), "SIGTERM": (case_sigterm, False),
    "stopped peer": (case_stopped_peer, True), "damaged checkpoint": (case_damaged, False),
    "read-only dir": (case_read_only, False), "full disk": (case_full_disk, False), "two runs": (case_two_runs, False),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default=",".join(ENGINES), help="engine:strategy pairs")
    ap.add_argument("--cases", default=",".join(CASES), help="which cases (comma-separated)")
    ap.add_argument("--out", help="folder for the runs (default: a temporary one, removed after)")
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fault_probe_"))
    failed = 0
    for pair in args.engines.split(","):
        engine, strategy = pair.split(":")
        for name in args.cases.split(","):
            fn, multi_only = CASES[name]
            if multi_only and engine == "simulated":
                continue
            d = out / f"{engine}-{strategy}" / name.replace(" ", "_").replace("-", "")
            t0 = time.time()
            try:
                ok, what = fn(engine, strategy, d)
            except Exception as err:  # noqa: BLE001 - a probe reports, it does not stop
                ok, what = False, f"probe error {type(err).__name__}: {err}"
            verdict = "skip" if ok is None else "ok" if ok else "FAIL"
            what = what.replace(str(out), "<out>")  # (this machine's temporary folder, not the finding)
            failed += ok is False
            print(f"{verdict:4s} | {engine:11s} {strategy:12s} | {name:18s} | {what} [{time.time() - t0:.0f} s]", flush=True)
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
