"""SIGTERM is recorded by the handler and acted on between steps, so nothing can swallow it."""

import gc
import os
import signal
import weakref

import numpy as np
import pytest

from deeprestore import interrupts, objectives
from deeprestore.optimise import Engine, every, gradient_descent, optimise
from deeprestore.probes import FeatureProbe


def send_sigterm():
    os.kill(os.getpid(), signal.SIGTERM)


def test_a_deferred_sigterm_is_recorded_and_raised_between_steps_not_in_the_handler():
    before = signal.getsignal(signal.SIGTERM)  # whatever the suite was started with
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), interrupts.deferred():
        send_sigterm()
        assert interrupts.requested() == "SIGTERM"  # still running: the handler raised nothing
        interrupts.raise_if_requested()
    assert interrupts.requested() is None and signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_that_lands_in_a_weakref_callback_still_stops_the_optimisation_loop(tiny, capsys):
    """The old handler raised from inside the callback, where Python prints 'Exception ignored' and goes on."""

    class Target:
        pass

    engine, target, steps = Engine(objectives.l2("relu1"), FeatureProbe(tiny, ["relu1"])), Target(), []
    reference = weakref.ref(target, lambda _: send_sigterm())
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        del target
        gc.collect()
        optimise(engine, np.ones((1, 8, 8, 3), np.float32), 50, gradient_descent(0.1),
                 callbacks=[every(1, lambda images, step: steps.append(step) or images)])

    assert reference() is None and steps == []  # stopped before the first step
    assert "Exception ignored" not in capsys.readouterr().err


def test_a_signal_after_the_last_check_is_raised_when_the_block_ends():
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        send_sigterm()


def test_a_second_sigterm_raises_at_once_for_a_step_that_never_ends():
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        send_sigterm()
        send_sigterm()
        pytest.fail("the second signal should have raised")


def test_training_inside_a_command_records_its_stop_and_the_command_block_clears_the_record():
    flag = {}
    from deeprestore.training import stop_on_signals

    before = signal.getsignal(signal.SIGINT)  # Python's default handler, or SIG_IGN under `nohup ... &`

    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        with stop_on_signals(flag):
            send_sigterm()
            send_sigterm()  # training lets every signal through to its own check
        assert flag == {"stop": "SIGTERM"}
        raise KeyboardInterrupt("training's Interrupted")
    assert interrupts.requested() is None and signal.getsignal(signal.SIGINT) is before


def test_a_signal_ignored_when_the_block_begins_stays_ignored_inside_it():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `nohup ... &` and batch systems start a job
    try:
        with interrupts.deferred((signal.SIGINT, signal.SIGTERM)):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert interrupts.requested() is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
