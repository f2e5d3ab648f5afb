"""The training loop's input wait (bn_inception/step_timing.py): the share of step time
spent blocked on the input pipeline, in metrics.jsonl and the console, a warning when a
run is input-bound; and train.profile_steps' jax.profiler trace."""

import glob
import json
import logging
import time

import pytest

from bn_inception import config_checks, step_timing, train
from bn_inception.data import create_source
from configs import mnist_fig1


def tiny_config(**train_fields):
  c = mnist_fig1.get_config("bn")
  c.model.hidden_units = (16,)
  c.train.update(num_steps=40, log_every=10, eval_every=0, checkpoint_every=40,
                 eval_at_start=False)
  c.train.update(train_fields)
  return c


@pytest.fixture(scope="module")
def mnist():
  return create_source(mnist_fig1.get_config().data)


class SlowSource:
  """`source` whose training batches each take `delay` seconds more to arrive."""

  def __init__(self, source, delay: float):
    self._source, self._delay = source, delay

  def train_batches(self, *args, **kwargs):
    for batch in self._source.train_batches(*args, **kwargs):
      time.sleep(self._delay)
      yield batch

  def __getattr__(self, name):
    return getattr(self._source, name)


def _rows(workdir):
  return [json.loads(l) for l in open(workdir / "metrics.jsonl")]


def _waits(workdir):
  return [r["input_wait"] for r in _rows(workdir) if "input_wait" in r]


def test_input_wait_is_a_share_per_log_step_and_a_fast_source_does_not_warn(
    tmp_path, mnist, caplog):
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(tiny_config(), str(tmp_path), source=mnist)
  rows = _rows(tmp_path)
  timed = [r for r in rows if "input_wait" in r]
  assert [r["step"] for r in timed] == [10, 20, 30, 40]  # with the train/* rows
  assert all("train/loss" in r and 0 <= r["input_wait"] <= 1 and r["input_wait_secs"] >= 0
             for r in timed)
  # In-memory MNIST: its batches take well under INPUT_BOUND_SECS (whatever their share
  # of a tiny MLP's step).
  assert max(r["input_wait_secs"] for r in timed[1:]) < step_timing.INPUT_BOUND_SECS
  assert "Input-bound" not in caplog.text


def test_a_slow_source_gives_a_high_share_and_one_warning(tmp_path, mnist, caplog):
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(tiny_config(), str(tmp_path), source=SlowSource(mnist, 0.03))
  waits = _waits(tmp_path)
  assert len(waits) == 4 and min(waits[1:]) > 0.8, waits
  warnings = [r.getMessage() for r in caplog.records if "Input-bound" in r.getMessage()]
  assert len(warnings) == 1 and "scripts/prepare_imagenet.py" in warnings[0], warnings
  secs = [r["input_wait_secs"] for r in _rows(tmp_path) if "input_wait_secs" in r]
  assert min(secs[1:]) >= 0.03


def test_the_console_line_shows_the_wait(tmp_path, mnist, capsys):
  from bn_inception import progress
  progress.configure(enabled=True, live=False)
  try:
    train.train_and_evaluate(tiny_config(num_steps=20), str(tmp_path),
                             source=SlowSource(mnist, 0.03))
  finally:
    progress.configure()
  err = capsys.readouterr().err
  assert "step 20/20" in err and "wait " in err.split("step 20/20")[1].split("\n")[0], err


def test_profile_steps_writes_a_trace_into_the_workdir(tmp_path, mnist):
  train.train_and_evaluate(tiny_config(num_steps=12, profile_steps="3:5"), str(tmp_path),
                           source=mnist)
  traces = glob.glob(str(tmp_path / "profile" / "plugins" / "profile" / "*" / "*.xplane.pb"))
  assert len(traces) == 1, list(tmp_path.rglob("*"))


@pytest.mark.parametrize("value", ["5:2", "0:3", "3", "a:b", "1:2:3", ":4"])
def test_a_bad_profile_steps_is_one_config_error_line(value):
  found = config_checks.problems(tiny_config(profile_steps=value))
  assert len(found) == 1 and found[0].startswith(
      f"config.train.profile_steps={value!r} must be 'a:b' with 1 <= a <= b"), found


def test_profile_window():
  from bn_inception.schema.training import profile_window
  assert profile_window("") is None and profile_window("3:5") == (3, 5)
  assert profile_window("4:4") == (4, 4)
