"""The README's "Your own model and data" snippet runs as written (in a scratch folder)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_your_own_model_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its run_dir=runs/mine lands here
    code = re.search(r"## Your own model and data\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README own model", "exec"), {})
    head_1, final = map(float, out.getvalue().split())
    assert 0 <= head_1 <= 1 and 0 <= final <= 1
    assert (tmp_path / "runs" / "mine" / "metrics.jsonl").exists()
