"""The progress line of a training run on the terminal."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """One status line per logged row: rewritten in place on a terminal, appended otherwise."""

    def __init__(self, label: str, stream=sys.stderr) -> None:
        self.label, self.stream = label, stream
        self.tty = stream.isatty()
        self.last_eval = ""
        self.t0 = time.perf_counter()

    def __call__(self, row: dict) -> None:
        if row["kind"] == "eval":
            split = "test" if row.get("test_final_acc") is not None else "val"
            acc = row.get(f"{split}_final_acc")
            self.last_eval = "" if acc is None else f" | {split} acc {100 * acc:.1f}%"
            if "test_final_ppl" in row:
                self.last_eval += f" ppl {row['test_final_ppl']:.2f}"
        else:
            losses = [row[k] for k in row if k.startswith("loss_")]
            # The top component's loss, or the highest one that trained in the window (NaN: it made no update).
            loss = next((l for l in reversed(losses) if l is not None and l == l), float("nan"))
            width = 24
            total = row["total_steps"]
            done = min(width, int(width * row["step"] / total))
            elapsed = time.perf_counter() - self.t0
            # Async DGL reads batches past the run's steps until every component has made its quota.
            count = (f"{row['step']}/{total}" if row["step"] <= total
                     else f"{total}/{total} +{row['step'] - total} batches until every quota is made")
            self.line = (f"{self.label} [{'#' * done}{'.' * (width - done)}] {count} "
                         f"| loss {loss:.3f} | {row['samples_per_s']:.0f} samples/s | {elapsed:.0f}s")
        text = getattr(self, "line", "") + self.last_eval
        if self.tty:
            self.stream.write("\r" + text.ljust(110)[:160])
            self.stream.flush()
        else:
            self.stream.write(text + "\n")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
