"""The body of one SLURM job (launch.py submits it): run a command line, pass stop
signals on, and hand submitit the same command again on a preemption notice.

Picklable: submitit sends a `CommandJob` to the node, which imports this module there.
launch.py's docstring tells the whole preemption story.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from typing import Mapping, Optional, Sequence

from bn_inception.workdir import REPO_ROOT


class CommandFailed(RuntimeError):
  """Raised inside the job when its command exits with an error (the job ends FAILED)."""


def _ignore_preemption_notice() -> None:  # in the child, before exec: SIG_IGN survives exec
  signal.signal(_notice_signal(), signal.SIG_IGN)


def _notice_signal() -> int:
  import submitit
  return getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)


class CommandJob:
  """The body of one SLURM task: run `argv` in `cwd` (the repo root), pass on stop signals.

  Picklable (submitit sends it to the node). `checkpoint()` makes it requeueable: submitit
  calls it on task 0 when the preemption notice (USR2) arrives.
  """

  def __init__(self, argv: Sequence[str], env: Optional[Mapping[str, str]] = None,
               cwd: str = REPO_ROOT):
    self.argv = [str(a) for a in argv]
    self.env = {str(k): str(v) for k, v in (env or {}).items()}
    self.cwd = str(cwd)
    self._proc: Optional[subprocess.Popen] = None
    self._exited = threading.Event()
    self._stopped_by: Optional[int] = None

  def __getstate__(self):
    return {"argv": self.argv, "env": self.env, "cwd": self.cwd}

  def __setstate__(self, state):
    self.__init__(state["argv"], state["env"], state["cwd"])

  def __repr__(self) -> str:
    return f"CommandJob({shlex.join(self.argv)})"

  def _stop(self, signum: int) -> None:
    """A stop signal or preemption notice reached this task: the trainer gets SIGTERM.

    Only the notice is passed on: a SIGTERM from SLURM (scancel, scontrol requeue, the
    time limit) reaches every process of the job step, the trainer included, and a
    second SIGTERM would make the trainer abort at once, without its checkpoint.
    """
    first = self._stopped_by is None
    self._stopped_by = self._stopped_by or signum
    # Once: the notice reaches both this handler and submitit's checkpoint().
    if (first and signum != signal.SIGTERM and self._proc is not None
        and not self._exited.is_set()):
      try:
        self._proc.send_signal(signal.SIGTERM)
      except ProcessLookupError:
        pass

  def __call__(self) -> int:
    env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(self.argv)}", flush=True)
    notice = _notice_signal()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, notice)}

    def on_signal(signum, frame):
      self._stop(signum)
      handler = previous.get(signum)
      if callable(handler):  # submitit's: on task 0 the notice checkpoints and requeues
        handler(signum, frame)

    for sig in previous:
      signal.signal(sig, on_signal)
    try:
      self._proc = subprocess.Popen(self.argv, cwd=self.cwd, env=env,
                                    preexec_fn=_ignore_preemption_notice)
      threading.Thread(target=self._reap, daemon=True).start()
      while not self._exited.wait(1.0):
        pass
    finally:
      for sig, handler in previous.items():
        signal.signal(sig, handler)
    rc = self._proc.returncode
    if self._stopped_by is not None:
      self._wait_for_slurm(rc)
    if rc != 0:
      raise CommandFailed(f"{shlex.join(self.argv[:2])} exited with status {rc}")
    return rc

  def _reap(self) -> None:
    self._proc.wait()
    self._exited.set()

  def _wait_for_slurm(self, rc: int, grace_s: float = 300.0) -> None:
    """The command stopped on a signal: SLURM is ending or requeuing this job (or task 0
    is requeuing it). Wait for SLURM to end this process rather than report an outcome."""
    name = signal.Signals(self._stopped_by).name
    print(f"# command stopped on {name} (status {rc}); waiting for SLURM to requeue or end "
          "the job", flush=True)
    time.sleep(grace_s)
    raise CommandFailed(f"{shlex.join(self.argv[:2])} stopped on {name} (status {rc}) and "
                        f"SLURM did not end the job within {grace_s:.0f} s; resubmit it to "
                        "resume from its checkpoint")

  def checkpoint(self, *args, **kwargs):
    """submitit's hook on the preemption notice (task 0): let the trainer checkpoint and
    exit, then hand back the same command to run again after the requeue."""
    import submitit
    self._stop(_notice_signal())
    if self._proc is not None:
      self._exited.wait()
      print(f"# command stopped (status {self._proc.returncode}); requeueing", flush=True)
    return submitit.helpers.DelayedSubmission(CommandJob(self.argv, self.env, self.cwd))
