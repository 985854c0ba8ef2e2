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


def test_the_main_jobs_time_says_what_machine_it_was_measured_on():
    # "about 5 minutes" was 7.4 minutes on a loaded machine: a time means little without its machine.
    text = README.read_text()
    intro = re.search(r"## The two commands\n\n(.*?)```", text, re.S).group(1)
    intro = " ".join(intro.split())
    assert "about 5 minutes" not in intro
    assert re.search(r"\d+ min \d+ s on an otherwise idle machine with 2 CPU cores", intro)
    assert "slower when" in intro  # and that a shared machine takes longer


def test_the_readme_documents_the_options_and_behaviours_of_issue_11():
    text = " ".join(README.read_text().split())
    for phrase in ("--list-options", "--rerun", "data.fallback=digits", "divergence_ratio", "log.txt",
                   "dist_timeout_s` for a silent or stuck peer", "SIGKILL included"):
        assert phrase in text, phrase
