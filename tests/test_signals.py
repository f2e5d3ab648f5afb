"""signals.StopSignals in this process: what a first signal does in each phase, and a
stop that an enclosing StopSignals remembered (the start-up path of scripts/train.py)."""

import os
import signal

import pytest

from bn_inception.signals import Stopped, StopSignals


def send(signum=signal.SIGTERM):
  os.kill(os.getpid(), signum)  # the handler runs before the next bytecode


def test_check_mode_only_remembers_and_check_raises():
  def before(signum, frame):
    raise AssertionError("the previous handler ran")
  previous = signal.signal(signal.SIGTERM, before)
  try:
    with StopSignals(start_up="check") as stop:
      send()
      assert stop.received == signal.SIGTERM  # no exception from the handler itself
      with pytest.raises(Stopped, match="SIGTERM"):
        stop.check()
    assert signal.getsignal(signal.SIGTERM) is before  # given back on exit
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_raise_mode_raises_from_the_handler():
  with pytest.raises(Stopped, match="SIGINT"):
    with StopSignals(start_up="raise"):
      send(signal.SIGINT)
      pytest.fail("the handler did not raise")


def test_a_stop_the_enclosing_one_remembered_is_inherited():
  with StopSignals(start_up="check") as outer:
    send()
    with StopSignals(start_up="check") as inner:  # e.g. train_and_evaluate's own
      assert inner.received == signal.SIGTERM
      # The first signal restored the default action: a second one would end the
      # process at once, and the inner one does not take that back.
      assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
      with pytest.raises(Stopped):
        inner.check()
    assert outer.received == signal.SIGTERM


def test_a_new_outermost_one_starts_clean():
  with StopSignals(start_up="check") as stop:
    assert stop.received is None
    stop.check()  # nothing to raise


def test_loop_mode_announces_and_does_not_raise(capsys):
  with StopSignals() as stop:
    send()
  assert stop.received == signal.SIGTERM
  assert "stopping after this step with a checkpoint" in capsys.readouterr().err


def test_an_unknown_mode_is_refused():
  with pytest.raises(ValueError, match="start_up='later'"):
    StopSignals(start_up="later")
