"""A progress bar: tqdm when it is installed (the ``zoo`` extra) and stderr is a terminal, else a
plain line every ``interval`` seconds on stderr (readable in log files). Shows the count, the rate,
the ETA and whatever the caller sets as postfix (e.g. the loss).

With a time budget (``budget_s``: a run that ends when its time is spent, like the demo) the
count has no known total: the bar shows the time spent against the budget instead, and the step
count beside it."""

from __future__ import annotations

import sys
import time
from typing import Dict, Optional

__all__ = ["Progress"]


def _fmt_time(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """``with Progress(total, desc) as bar: bar.update(n); bar.set(loss=...)``.

    ``budget_s``: the run ends when ``elapsed`` (given to ``update``) reaches it, whatever the
    count; ``total`` then only caps the count and is not shown."""

    def __init__(
        self,
        total: int,
        desc: str = "",
        initial: int = 0,
        unit: str = "it",
        disable: bool = False,
        interval: float = 5.0,
        budget_s: Optional[float] = None,
        elapsed_s: float = 0.0,
    ):
        self.total, self.desc, self.n, self.unit = total, desc, initial, unit
        self.disable = disable
        self.interval = interval
        self.budget = budget_s
        self.elapsed = elapsed_s
        self.postfix: Dict[str, str] = {}
        self._start, self._start_n, self._last = time.time(), initial, time.time()
        self._final_shown = False
        self._printed_n = initial
        self._bar = None
        if not disable and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm

                if self.budget is None:
                    self._bar = tqdm(
                        total=total,
                        desc=desc,
                        initial=initial,
                        unit=unit,
                        dynamic_ncols=True,
                        file=sys.stderr,
                        mininterval=0.5,
                    )
                else:  # the bar is time: spent / budget
                    self._bar = tqdm(
                        total=round(self.budget),
                        desc=desc,
                        initial=min(round(elapsed_s), round(self.budget)),
                        dynamic_ncols=True,
                        file=sys.stderr,
                        mininterval=0.5,
                        bar_format="{desc} {n_fmt}/{total_fmt} s |{bar}| {postfix}",
                    )
            except ImportError:
                self._bar = None

    def rate(self) -> float:
        elapsed = time.time() - self._start
        return (self.n - self._start_n) / elapsed if elapsed > 0 else float("nan")

    def set_total(self, total: int) -> None:
        """Change the expected total."""
        self.total = total
        if self._bar is not None and self.budget is None:
            self._bar.total = total

    def set(self, **values) -> None:
        self.postfix = {
            k: (f"{v:.2f}" if isinstance(v, float) else str(v)) for k, v in values.items()
        }
        if self._bar is not None:
            shown = dict(self.postfix)
            if self.budget is not None:
                shown = {self.unit: str(self.n), **shown}
            self._bar.set_postfix(shown, refresh=False)

    def line(self) -> str:
        """The plain progress line."""
        rate = self.rate()
        extra = " ".join(f"{k} {v}" for k, v in self.postfix.items())
        if self.budget is not None:
            return (
                f"{self.desc} {self.unit} {self.n} time {_fmt_time(self.elapsed)}/"
                f"{_fmt_time(self.budget)} {extra} {rate:.2f} {self.unit}/s"
            ).replace("  ", " ")
        eta = (self.total - self.n) / rate if rate and rate > 0 else float("nan")
        return (
            f"{self.desc} {self.n}/{self.total} {extra} {rate:.2f} {self.unit}/s "
            f"ETA {_fmt_time(eta)}"
        ).replace("  ", " ")

    def update(self, n: int = 1, elapsed: Optional[float] = None) -> None:
        """Count ``n`` more; ``elapsed``: the time spent so far against the budget."""
        self.n += n
        if elapsed is not None:
            self.elapsed = elapsed
        if self.disable:
            return
        if self._bar is not None:
            if self.budget is None:
                self._bar.update(n)
            else:
                target = min(round(self.elapsed), round(self.budget))
                if target > self._bar.n:
                    self._bar.update(target - self._bar.n)
                self._bar.set_postfix({self.unit: str(self.n), **self.postfix}, refresh=False)
            return
        now = time.time()
        last = self.budget is None and self.n >= self.total and not self._final_shown
        if now - self._last >= self.interval or last:
            self._last = now
            self._final_shown = self._final_shown or last
            self._print()

    def _print(self) -> None:
        self._printed_n = self.n
        sys.stderr.write(self.line() + "\n")
        sys.stderr.flush()

    def write(self, text: str) -> None:
        """Print a line without breaking the bar."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        elif not self.disable:
            sys.stderr.write(text + "\n")

    def close(self) -> None:
        """Closes the bar; a plain progress line that moved since it was last printed is printed
        once more (where the run ended)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif not self.disable and self.n != self._printed_n:
            self._print()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
