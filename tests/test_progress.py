"""stationd.progress: the progress line, with a fake terminal and a fake clock."""

import io

import pytest

from stationd.progress import Progress, format_bytes, format_duration


class Terminal(io.StringIO):
    """A stream that says it is a terminal (or not)."""

    def __init__(self, tty=True):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def lines(stream):
    """The lines drawn so far, each without its \\r and clear-to-end-of-line."""
    return [part.replace("\x1b[K", "") for part in stream.getvalue().split("\r") if part]


@pytest.mark.parametrize("tty, quiet", [(False, False), (True, True), (False, True)])
def test_silent_off_a_terminal_and_with_quiet(tty, quiet):
    stream, clock = Terminal(tty), Clock()
    with Progress(1000, stream=stream, clock=clock, quiet=quiet) as progress:
        clock.now += 1
        progress.update(500)
        progress.clear()
    assert stream.getvalue() == "" and not progress.enabled
    assert progress.done == 500  # still counted


def test_bytes_with_a_total_show_done_percent_rate_and_time_left():
    stream, clock = Terminal(), Clock()
    progress = Progress(10_000_000, label="trace.bin", stream=stream, clock=clock)
    clock.now += 2
    progress.update(2_500_000)
    assert lines(stream) == ["trace.bin  2.5 MB / 10.0 MB  25%  1.2 MB/s  0:06 left"]
    assert stream.getvalue().startswith("\r") and stream.getvalue().endswith("\x1b[K")
    clock.now += 6
    progress.update(7_500_000)
    progress.close()
    assert lines(stream)[-1] == "trace.bin  10.0 MB / 10.0 MB  100%  1.2 MB/s  done in 0:08\n"
    assert stream.getvalue().endswith("\x1b[K\n")


def test_counts_without_a_total_show_done_and_rate_only():
    stream, clock = Terminal(), Clock()
    progress = Progress(None, unit="events", stream=stream, clock=clock)
    clock.now += 4
    progress.update(10)
    assert lines(stream) == ["10 events  2.5 events/s"]
    files = Progress(8, unit="files", stream=stream, clock=clock)
    clock.now += 10
    files.update(2)
    assert lines(stream)[-1] == "2/8 files  25%  0.2 files/s  0:30 left"
    fast = Progress(None, unit="events", stream=stream, clock=clock)
    clock.now += 0.3
    fast.update(4567)
    assert lines(stream)[-1] == "4567 events  15223 events/s"  # no tenths in a large rate


def test_redraws_at_most_five_times_a_second():
    stream, clock = Terminal(), Clock()
    progress = Progress(None, unit="events", stream=stream, clock=clock)
    for _ in range(100):  # one second of updates every 10 ms
        clock.now += 0.01
        progress.update(1)
    assert len(lines(stream)) == 5
    progress.close()  # the last count drawn, whenever it came
    assert lines(stream)[-1].startswith("100 events") and len(lines(stream)) == 6


def test_clear_erases_the_line_and_the_next_update_redraws_it():
    stream, clock = Terminal(), Clock()
    progress = Progress(3, unit="files", label="upload", stream=stream, clock=clock)
    progress.update(1)
    progress.clear()
    assert stream.getvalue().endswith("\r\x1b[K")
    progress.update(1)  # at once, not throttled
    assert lines(stream)[-1].startswith("upload  2/3 files")


def test_close_writes_the_final_line_once_and_no_clock_time_means_no_rate():
    stream, clock = Terminal(), Clock()
    with Progress(0, unit="files", stream=stream, clock=clock) as progress:
        pass
    progress.close()
    assert lines(stream) == ["0/0 files  100%  - files/s  done in 0:00\n"]


def test_a_broken_terminal_never_fails_the_work():
    class Broken(Terminal):
        def write(self, text):
            raise OSError(5, "Input/output error")

    stream, clock = Broken(), Clock()
    with Progress(10, stream=stream, clock=clock) as progress:
        progress.update(5)
        assert not progress.enabled  # drawing stopped after the first failure
        progress.update(5)
    assert progress.done == 10


def test_the_stream_defaults_to_stderr_as_it_is_at_construction(monkeypatch):
    stream = Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    progress = Progress(None)
    monkeypatch.setattr("sys.stderr", Terminal(tty=False))
    progress.update(1)
    assert lines(stream)[0].startswith("1 B")


def test_a_long_label_keeps_its_end():
    stream = Terminal()
    Progress(None, label="/data/" + "x" * 60 + "/night.json", stream=stream, clock=Clock()).update(1)
    label = lines(stream)[0].split("  ")[0]
    assert label.startswith("...") and label.endswith("/night.json") and len(label) == 40


@pytest.mark.parametrize("n, text", [(0, "0 B"), (999, "999 B"), (1500, "1.5 kB"), (2_340_000, "2.3 MB"),
                                     (5 * 10**9, "5.0 GB"), (7 * 10**12, "7000.0 GB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (59.6, "1:00"), (125, "2:05"), (3725, "1:02:05")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
