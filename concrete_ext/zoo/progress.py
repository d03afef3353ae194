"""A progress bar: tqdm when it is installed (the ``zoo`` extra) and stderr is a terminal, else a
plain line every few seconds on stderr (readable in log files). Shows the count, the rate, the ETA
and whatever the caller sets as postfix (e.g. the loss)."""

from __future__ import annotations

import sys
import time
from typing import Dict

__all__ = ["Progress"]


def _fmt_time(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """``with Progress(total, desc) as bar: bar.update(n); bar.set(loss=...)``."""

    def __init__(self, total: int, desc: str = "", initial: int = 0, unit: str = "it",
                 disable: bool = False, interval: float = 5.0):
        self.total, self.desc, self.n, self.unit = total, desc, initial, unit
        self.disable = disable
        self.interval = interval
        self.postfix: Dict[str, str] = {}
        self._start, self._start_n, self._last = time.time(), initial, 0.0
        self._bar = None
        if not disable and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=desc, initial=initial, unit=unit,
                                 dynamic_ncols=True, file=sys.stderr, mininterval=0.5)
            except ImportError:
                self._bar = None

    def rate(self) -> float:
        elapsed = time.time() - self._start
        return (self.n - self._start_n) / elapsed if elapsed > 0 else float("nan")

    def set_total(self, total: int) -> None:
        """Change the expected total (e.g. when a time budget ends the run first)."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total

    def set(self, **values) -> None:
        self.postfix = {k: (f"{v:.2f}" if isinstance(v, float) else str(v))
                        for k, v in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(self.postfix, refresh=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.disable:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.time()
        if now - self._last >= self.interval or self.n >= self.total:
            self._last = now
            rate = self.rate()
            eta = (self.total - self.n) / rate if rate and rate > 0 else float("nan")
            extra = " ".join(f"{k} {v}" for k, v in self.postfix.items())
            sys.stderr.write(f"{self.desc} {self.n}/{self.total} {extra} {rate:.2f} {self.unit}/s "
                             f"ETA {_fmt_time(eta)}\n")
            sys.stderr.flush()

    def write(self, text: str) -> None:
        """Print a line without breaking the bar."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        elif not self.disable:
            sys.stderr.write(text + "\n")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

