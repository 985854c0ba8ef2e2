"""The ranks runtime under bf16 and fp16 equals the local runtime bit for bit (same dtypes on both), and an
fp16 run resumed from component checkpoints (the scalers' state in them) equals the uninterrupted one.

One launch (one process group) for every ranks pair the registry declares that honours precision;
the recipe is tests/pair_helpers.py's, as in tests/test_engine_pairs.py.
"""

from __future__ import annotations

import torch

import pair_helpers as P
from interlock.engine.specs import STRATEGIES
from interlock.runtime.launch import run_local

RANKS = [n for n in P.builtin_names() if STRATEGIES.get(n).supports("ranks") and STRATEGIES.get(n).policy_for("ranks").honours_precision]
BF16, FP16 = {"precision": "bf16"}, {"precision": "fp16"}
RUNS = [(n, False, BF16) for n in RANKS] + [(n, resume, FP16) for n in RANKS for resume in (False, True)]


def test_ranks_equal_local_bit_for_bit_under_bf16_and_fp16():
    assert {"end-to-end", "<n>-wise", "local"} <= set(RANKS)
    ranks = run_local(P.rank_main_runs, P.K, RUNS, timeout_s=300)
    for name, resume, options in RUNS:
        key = (name, resume, tuple(sorted(options.items())))
        local = P.train(name, "local", resume=False, **options)
        for r, got in enumerate(ranks):
            run = got[key]
            assert run["state"].keys() == {k for k in local["state"] if k.startswith(f"{r}.")}, key
            for param, t in run["state"].items():
                assert t.dtype is local["state"][param].dtype
                assert torch.equal(t, local["state"][param]), (key, r, param)  # ranks == local, bit for bit
            mine = [[row[r]] for row in run["losses"]]
            assert P.same_losses(mine, [[row[r]] for row in local["losses"]]), (key, r)
            if options is FP16:
                assert run["skipped_steps"] == {r: local["skipped_steps"][r]}, key
