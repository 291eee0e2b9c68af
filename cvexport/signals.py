"""Ctrl-C and SIGTERM as a request to stop cleanly, for the commands that run until stopped.

``stream`` and ``predict`` both drain what is in flight and close (or commit) every output on
the first signal; a service manager's SIGTERM deserves the same as a terminal's Ctrl-C, or a
``systemctl stop`` would lose the run. Exit statuses are the shell's: 128 + the signal number.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}  # 128 + signal number, as shells report them


def install_stop_signals(on_signal: Callable[[str], None]) -> dict:
    """SIGINT / SIGTERM call ``on_signal(name)`` instead of ending the process; returns the previous
    handlers, for :func:`restore_signals`. Signals reach only the main thread: elsewhere nothing is
    installed (an empty dict)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        on_signal(signal.Signals(signum).name)

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
