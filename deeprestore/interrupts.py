"""Signals that stop a command between two steps, never inside one.

A signal handler that raises can land anywhere, including inside a weakref callback or a `__del__`,
where Python prints "Exception ignored" and carries on, so a pre-empted job would run to the end.
Instead, `deferred(signals)` makes the handler only record the signal, and the long loops call
`raise_if_requested()` between steps (the optimisation loop, training, per-image loops), which raises
`KeyboardInterrupt` in ordinary code where nothing can swallow it. A second signal raises at once,
for a loop that is stuck inside one long step; leaving the outermost `deferred` block raises too, so
a signal that arrived after the last check is never lost.

A signal that is ignored when a block begins stays ignored: a job started with SIGINT ignored (as
`nohup ... &` and batch systems start it) is not made interruptible by Ctrl-C, as Python itself leaves
an inherited ignored SIGINT alone.
"""

import contextlib
import signal
import threading

_received = []  # names of the signals received inside the outermost `deferred` block, in order
_depth = [0]


def requested():
    """The name of the first signal received (e.g. `SIGTERM`), or None."""
    return _received[0] if _received else None


def raise_if_requested():
    """Raises `KeyboardInterrupt` naming the signal if one was received; call between steps.

    Raises:
        KeyboardInterrupt: A deferred signal arrived.
    """
    if _received:
        raise KeyboardInterrupt(_received[0])


@contextlib.contextmanager
def deferred(signals=(signal.SIGTERM,), second_raises=True, on_signal=None, raise_on_exit=True):
    """Records the given signals instead of acting on them at once; restores the old handlers on exit.

    Blocks nest (training defers SIGINT too, inside a command that defers SIGTERM); they share one record
    of received signals, cleared when the outermost block ends. Outside the main thread, where Python
    cannot install handlers, the block changes nothing; a signal ignored when the block begins stays
    ignored.

    Args:
        signals: The signals to defer.
        second_raises: Whether a second signal raises `KeyboardInterrupt` from the handler at once.
        on_signal: Called with the signal's name when one arrives (training records it for its loop).
        raise_on_exit: Whether leaving the outermost block raises for a signal received inside it
            (training raises its own `Interrupted` after checkpointing instead).

    Raises:
        KeyboardInterrupt: On leaving the outermost block normally when a signal was received.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def record(signum, frame):
        _received.append(signal.Signals(signum).name)
        if on_signal is not None:
            on_signal(_received[-1])
        if second_raises and len(_received) > 1:
            raise KeyboardInterrupt(_received[0])

    previous = {number: signal.signal(number, record) for number in signals
                if signal.getsignal(number) is not signal.SIG_IGN}
    _depth[0] += 1
    try:
        yield
        if raise_on_exit and _depth[0] == 1:
            raise_if_requested()
    finally:
        _depth[0] -= 1
        for number, handler in previous.items():
            signal.signal(number, handler)
        if _depth[0] == 0:
            _received.clear()
