"""A one-line progress display on a terminal (issue 19, item 7).

A few lines of our own rather than tqdm (not in this machine's registry):
done, rate and time left, redrawn in place on stderr, and nothing at all
when stderr is not a terminal or ``quiet`` is set, so scripts and pipes see
only the result on stdout.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Callable, TextIO

#: Seconds between redraws: about five a second is smooth and costs nothing.
REDRAW_INTERVAL = 0.2

#: Characters of the label shown (the end of a long path): a line wider than the terminal
#: would wrap, and a redraw would then start a line too low.
LABEL_WIDTH = 40

_CLEAR_TO_END = "\x1b[K"


def format_bytes(n: float) -> str:
    """``n`` bytes in B, kB, MB or GB (powers of 1000, as rates are usually given)."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """``H:MM:SS``, or ``M:SS`` under an hour."""
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


class Progress:
    """Done, rate and time left on one stderr line, redrawn at most ~5 times a second; silent when
    the stream is not a terminal or quiet is set.

    ``total`` and ``label`` may be changed as the work goes (a total known
    only once the work is listed, the file now being sent); clear() makes
    room for a line of other output.
    """

    def __init__(self, total: int | None, unit: str = "B", label: str = "", *, quiet: bool = False,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.unit = unit
        self.label = label
        self.done = 0
        self._stream = sys.stderr if stream is None else stream
        self._clock = clock
        self._started = clock()
        self._last_draw: float | None = None
        self._closed = False
        self.enabled = not quiet and _isatty(self._stream)

    def update(self, n: int) -> None:
        """Count ``n`` more done; redraw when the last redraw is old enough."""
        self.done += n
        if not self.enabled:
            return
        now = self._clock()
        if self._last_draw is None or now - self._last_draw >= REDRAW_INTERVAL:
            self._last_draw = now
            self._draw(self.line(now))

    def clear(self) -> None:
        """Erase the line, so a result printed now starts at the left; the next update redraws it."""
        if self.enabled and self._last_draw is not None:
            self._last_draw = None
            try:
                self._stream.write("\r" + _CLEAR_TO_END)
                self._stream.flush()
            except Exception:
                self.enabled = False

    def close(self) -> None:
        """The final line and a newline, so the result or the prompt starts on a line of its own."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(self.line(self._clock()), end="\n")

    def line(self, now: float) -> str:
        """The text of the progress line at clock time ``now``."""
        elapsed = now - self._started
        rate = self.done / elapsed if elapsed > 0 else None
        label = self.label if len(self.label) <= LABEL_WIDTH else "..." + self.label[3 - LABEL_WIDTH:]
        parts = [label] if label else []
        if self.total is not None:
            parts.append(f"{self._amount(self.done)} / {self._amount(self.total)}" if self.unit == "B"
                         else f"{self.done}/{self._amount(self.total)}")
            percent = 100 * self.done / self.total if self.total else 100.0
            parts.append(f"{min(percent, 100.0):.0f}%")
        else:
            parts.append(self._amount(self.done))
        parts.append(f"{self._amount(rate)}/s" if rate is not None else f"- {self.unit}/s")
        if self.total is not None:
            remaining = max(self.total - self.done, 0)
            if remaining == 0:
                parts.append(f"done in {format_duration(elapsed)}")
            elif rate:
                parts.append(f"{format_duration(remaining / rate)} left")
            else:
                parts.append("-:-- left")
        return "  ".join(parts)

    def _amount(self, n: float) -> str:
        if self.unit == "B":
            return format_bytes(n)
        return f"{n:.0f} {self.unit}" if n >= 100 or float(n).is_integer() else f"{n:.1f} {self.unit}"

    def _draw(self, text: str, end: str = "") -> None:
        """Redraw in place; a broken or closed terminal must never fail the work it reports on."""
        try:
            self._stream.write("\r" + text + _CLEAR_TO_END + end)
            self._stream.flush()
        except Exception:
            self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False
