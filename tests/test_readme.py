"""The README's quick start runs as written and shows what it says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs():
    text = README.read_text()
    code = re.search(r"## Quick start\n.*?```python\n(.*?)```", text, re.S).group(1)
    assert len(code.splitlines()) <= 20
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README quick start", "exec"), {})
    losses, shape = out.getvalue().strip().splitlines()
    assert len(eval(losses)) == 3 and shape == "torch.Size([8, 10])"


def test_readme_commands_match_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    test_command = re.search(r"Run the tests:\n\n```bash\n(.*?)\n```", text, re.S).group(1)
    assert test_command in ci
