"""Progress of every long job, and the console a person reads.

One module for all of it, so every job looks the same:

* `setup_console(...)` (called by `cli.setup_console` after flag parsing): by default the
  console shows this project's own messages plainly, warnings and errors from
  anywhere (library ones with absl's `W1201 12:05:31 ... file.py:12]` prefix), and
  the progress lines below; library INFO lines (clu's per-step `logging_writer.py`
  scalars, orbax, jax) are left to the log file. `full_console=True` (the command
  line's `--verbosity`, `--logtostderr`, `--alsologtostderr`) brings back absl's full
  console; `show_progress=False` (`--noprogress`) leaves only results, warnings and
  errors. The flags are cli.py's.
* `log_file(workdir)`: every log line, with absl's prefix, appended to
  `<workdir>/log.txt` while a run trains there.
* `Progress` / `track`: work done toward a total (crops, batches, windows, steps),
  with rate and ETA from tqdm: a live bar on a terminal, elsewhere a line every
  `every_secs` (a few a minute in a log) and one at the end.
* `TrainProgress`: clu's `ReportProgress` (steps/s and uptime to the writers, as
  before) plus one readable line per log step: run, step/total, loss, accuracy,
  images/s, the share of step time waiting for input, ETA (from ReportProgress's
  steps/s) and the last evaluation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterable, Iterator, Optional

import tqdm

from bn_inception import workdir as workdir_lib

EVERY_SECS = 20.0  # a progress line in a log at most this often (a few a minute)

# The progress lines' logger: its own plain console handler; it also propagates to
# the root logger's handlers (the log file, and absl's console when it is on).
_LOG = logging.getLogger("bn_inception.progress")
_LOG.setLevel(logging.INFO)

_settings = {"enabled": True, "live": None, "every_secs": EVERY_SECS}


def configure(enabled: bool = True, live: Optional[bool] = None,
              every_secs: float = EVERY_SECS) -> None:
  """Progress on or off; `live`: bars that redraw in place (None: when stderr is a
  terminal); `every_secs`: the interval of progress lines when not live."""
  _settings.update(enabled=enabled, live=live, every_secs=every_secs)


def enabled() -> bool:
  return bool(_settings["enabled"])


def live() -> bool:
  if _settings["live"] is not None:
    return bool(_settings["live"]) and enabled()
  try:
    return enabled() and sys.stderr.isatty()
  except (AttributeError, ValueError):  # a closed or replaced stream
    return False


def format_duration(seconds: Optional[float]) -> str:
  """'12:34' or '1:02:03' (tqdm's format, as on the bars); '?' when unknown."""
  if seconds is None or seconds != seconds or seconds == float("inf"):
    return "?"
  return tqdm.tqdm.format_interval(max(0.0, seconds))


# ----------------------------------------------------------------------------- console


def _write_console(text: str, stream=None) -> None:
  """Write a line to the console without tearing a live bar (tqdm.write moves it)."""
  stream = stream or sys.stderr
  if any(getattr(bar, "_bn_live", False) for bar in list(tqdm.tqdm._instances)):
    tqdm.tqdm.write(text.rstrip("\n"), file=stream)
  else:
    stream.write(text if text.endswith("\n") else text + "\n")
    stream.flush()


class _PlainHandler(logging.Handler):
  """The progress lines as they are, on stderr (looked up at each line)."""

  def emit(self, record):
    try:
      _write_console(record.getMessage())
    except Exception:  # never let the console break a job
      self.handleError(record)


class _ConsoleHandler(logging.Handler):
  """The default console: this project's messages plainly (warnings as 'WARNING: ...'),
  other libraries' warnings and errors with absl's prefix; no library INFO."""

  def __init__(self):
    super().__init__()
    from absl import logging as absl_logging
    self._absl_format = absl_logging.PythonFormatter()

  @staticmethod
  def ours(record) -> bool:
    path = os.path.abspath(record.pathname or "")
    return path.startswith(workdir_lib.REPO_ROOT + os.sep) and "site-packages" not in path

  def filter(self, record) -> bool:
    if record.name == _LOG.name:
      return False  # printed by its own handler
    return record.levelno >= logging.WARNING or self.ours(record)

  def emit(self, record):
    try:
      if self.ours(record):
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
          message = f"{logging.getLevelName(record.levelno)}: {message}"
        if record.exc_info:
          message += "\n" + logging.Formatter().formatException(record.exc_info)
      else:
        message = self._absl_format.format(record)
      _write_console(message)
    except Exception:
      self.handleError(record)


_plain = _PlainHandler()
_LOG.addHandler(_plain)


def setup_console(show_progress: bool = True, full_console: bool = False) -> None:
  """The readable console (module docstring), after absl has parsed the flags."""
  from absl import logging as absl_logging
  configure(enabled=show_progress, live=_settings["live"], every_secs=_settings["every_secs"])
  root = logging.getLogger()
  if full_console:
    _LOG.removeHandler(_plain)  # absl prints the progress lines, with its prefix
    return
  absl_handler = absl_logging.get_absl_handler()
  absl_handler.setLevel(logging.CRITICAL)  # still handles fatal errors
  if not any(isinstance(h, _ConsoleHandler) for h in root.handlers):
    root.addHandler(_ConsoleHandler())


def emit(line: str) -> None:
  """One progress line (console and log file); nothing with --noprogress."""
  if enabled():
    _LOG.info(line)


def echo(text: str, stream) -> None:
  """Pass through text (e.g. a child process's output) without tearing a live bar."""
  _write_console(text, stream)


class _LogFile(logging.FileHandler):
  """<workdir>/log.txt. A write that fails (a full disk) stops the file, not the run and
  not the console: one warning there, no logging traceback, every later line on the
  console only."""

  failed = False

  def emit(self, record):
    if not self.failed:
      super().emit(record)

  def handleError(self, record):
    error = sys.exc_info()[1]
    if not isinstance(error, OSError):
      return super().handleError(record)
    self.failed = True
    logging.getLogger().warning("%s can no longer be written (%s): its lines go to the "
                                "console only.", self.baseFilename, error.strerror or error)

  def close(self):
    with contextlib.suppress(OSError):  # the last flush on a full disk
      super().close()


@contextlib.contextmanager
def log_file(workdir: str, process_index: int = 0):
  """Append every log line (absl's format, at the logging level in force) to
  <workdir>/log.txt (log.<i>.txt for process i > 0) while the block runs."""
  if not workdir_lib.is_local(workdir):  # remote workdirs: the console and TensorBoard only
    yield None
    return
  from absl import logging as absl_logging
  path = workdir_lib.log_path(workdir, process_index)
  os.makedirs(workdir, exist_ok=True)
  handler = _LogFile(path, mode="a", encoding="utf-8")
  handler.setFormatter(absl_logging.PythonFormatter())
  root = logging.getLogger()
  root.addHandler(handler)
  try:
    yield path
  finally:
    root.removeHandler(handler)
    handler.close()


# ------------------------------------------------------------------------- done / total


class _LogLines:
  """A file for tqdm when not live: each status it prints becomes one progress line."""

  def write(self, text: str) -> None:
    for part in text.replace("\r", "\n").split("\n"):
      if part.strip():
        _LOG.info(part.rstrip())

  def flush(self) -> None:
    pass


class Progress:
  """`done`/`total` units of work with rate and ETA (tqdm's).

  On a terminal a live bar; elsewhere a line when it starts, at most every
  `every_secs` while it runs, and when it ends ("<desc>: 1200/10000 crops (12%)
  [00:15<01:50, 80.00crops/s]"). Silent with --noprogress or `show=False`
  (e.g. on processes other than the first).
  """

  def __init__(self, desc: str, total: Optional[int], unit: str = "it", initial: int = 0,
               show: bool = True, live_only: bool = False):
    self.total, self.n = total, initial
    is_live = live()
    self._bar = None
    if not (show and enabled()) or (live_only and not is_live):
      return
    common = dict(total=total, initial=initial, desc=desc, unit=unit, unit_scale=False,
                  smoothing=0.1)
    if is_live:
      self._bar = tqdm.tqdm(file=sys.stderr, mininterval=0.5, dynamic_ncols=True,
                            leave=True, **common)
    else:
      self._bar = tqdm.tqdm(
          file=_LogLines(), mininterval=_settings["every_secs"], maxinterval=float("inf"),
          miniters=1, leave=True,
          bar_format="{desc}: {n_fmt}/{total_fmt} " + unit +
                     " ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}]", **common)
    self._bar._bn_live = is_live

  def update(self, n: int = 1) -> None:
    self.n += n
    if self._bar is not None:
      self._bar.update(n)

  def update_to(self, n: int) -> None:
    if n > self.n:
      self.update(n - self.n)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def __enter__(self) -> "Progress":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def track(items: Iterable, desc: str, total: Optional[int], unit: str = "it",
          show: bool = True) -> Iterator:
  """Yield `items`, counting them with a `Progress`."""
  with Progress(desc, total, unit, show=show) as p:
    for item in items:
      yield item
      p.update(1)


# ----------------------------------------------------------------------------- training


class TrainProgress:
  """The training loop's progress: clu's `ReportProgress` and the console line.

    report = progress.TrainProgress(writer, name=..., num_steps=..., ...)
    writer = report.writer      # the workdir's writers plus the console
    report(step)                # after every step

  ReportProgress writes steps/s and uptime to the writers exactly as before; the
  console is one more clu MetricWriter: from the scalars the loop writes at a log
  step (and ReportProgress's steps/s) it prints one line (here folded), e.g.

    bn  step 3,000/50,000  loss 0.2695  acc 0.9192  14,351 img/s  wait 3%  ETA 03:16
        eval 0.9291 @3,000

  At a step that is also evaluated the line waits for that evaluation. On a
  terminal a live bar (steps, rate, ETA) sits below the lines.
  """

  def __init__(self, writer, *, name: str, num_steps: int, batch_size: int, log_every: int,
               eval_every: int, start_step: int = 0, show: bool = True):
    from clu import metric_writers, periodic_actions
    self._show = show and enabled()
    self.writer = writer
    if self._show:
      self.writer = metric_writers.MultiWriter(
          [writer, _TrainConsole(name, num_steps, batch_size, eval_every)])
    self._report = periodic_actions.ReportProgress(
        num_train_steps=num_steps, writer=self.writer, every_steps=log_every, every_secs=None)
    self._bar = Progress(name, num_steps, "step", initial=start_step, show=self._show,
                         live_only=True)

  def __call__(self, step: int) -> bool:
    self._bar.update_to(step)
    return self._report(step)

  def close(self) -> None:
    self._bar.close()


class _TrainConsole:
  """A clu MetricWriter (by its methods: importing clu here would import TensorFlow
  before `quiet_native_logs`) that turns the loop's scalars into one line per log step."""

  def __init__(self, name: str, num_steps: int, batch_size: int, eval_every: int):
    self.name, self.num_steps, self.batch_size = name, num_steps, batch_size
    self.eval_every = eval_every
    self.steps_per_sec: Optional[float] = None
    self.last_eval: Optional[tuple] = None  # (step, accuracy)
    self.pending: Optional[tuple] = None    # (step, train scalars) awaiting its eval

  def _is_eval_step(self, step: int) -> bool:
    return self.eval_every > 0 and (step % self.eval_every == 0 or step == self.num_steps)

  def write_scalars(self, step, scalars):
    step = int(step)
    if self.pending is not None and self.pending[0] != step:
      self._emit(*self.pending)
    if "steps_per_sec" in scalars:  # ReportProgress, just before the train scalars
      self.steps_per_sec = float(scalars["steps_per_sec"])
    if "eval/accuracy" in scalars:
      self.last_eval = (step, float(scalars["eval/accuracy"]))
      if self.pending is not None:
        self._emit(*self.pending)
    if "train/loss" in scalars:
      self.pending = (step, dict(scalars))
      if not self._is_eval_step(step):
        self._emit(*self.pending)

  def _emit(self, step: int, scalars: dict):
    self.pending = None
    parts = [self.name, f"step {step:,}/{self.num_steps:,}",
             f"loss {float(scalars['train/loss']):.4f}"]
    if "train/accuracy" in scalars:
      parts.append(f"acc {float(scalars['train/accuracy']):.4f}")
    rate = self.steps_per_sec
    if rate:
      parts.append(f"{rate * self.batch_size:,.0f} img/s")
    if "input_wait" in scalars:  # share of the step time waiting for input (step_timing)
      parts.append(f"wait {100 * float(scalars['input_wait']):.0f}%")
    # ETA from ReportProgress's steps/s, as its own work-unit note computes it.
    parts.append("ETA " + format_duration((self.num_steps - step) / rate if rate else None))
    if self.last_eval is not None:
      parts.append(f"eval {self.last_eval[1]:.4f} @{self.last_eval[0]:,}")
    nonfinite = scalars.get("train/nonfinite_steps")
    if nonfinite:
      parts.append(f"{int(nonfinite)} non-finite step(s) skipped")
    emit("  ".join(parts))

  def __getattr__(self, name):
    if name.startswith("write_"):  # images, histograms, hparams, ...: not for the console
      return lambda *args, **kwargs: None
    raise AttributeError(name)

  def flush(self):
    if self.pending is not None:
      self._emit(*self.pending)

  def close(self):
    self.flush()
