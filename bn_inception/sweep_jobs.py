"""Sweep members as SLURM jobs (submit, cancel), and where every member of a sweep stands.

  submit_sweep("configs/sweeps/lr_acceleration.py", "/shared/runs/lr", resources)
  print(status_table(status("configs/sweeps/lr_acceleration.py", "/shared/runs/lr")))

Each member is one job (bn_inception/launch.py) running the member's scripts/train.py
command -- the line `--print_commands` prints -- with this python; submitit's files are
in <workdir>/<member>/slurm. A member is submitted only when it is not finished, no job
of it is pending or running (the scheduler's records) and no live run holds its workdir
(<member>/.lock), and not after `max_failures` failed jobs. Preempted or timed-out jobs
are requeued by SLURM itself and resume from their checkpoint (launch.py).

`status` reads a sweep the same way whether it ran here (scripts/sweep.py) or as jobs:
the checkpoints and metrics.jsonl (bn_inception/workdir.py), the workdir lock
(workdir_lock.py), and for members with jobs the scheduler (sacct/squeue).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, TextIO

from bn_inception import launch, sweep_runner
from bn_inception import workdir as workdir_lib
from bn_inception.sweep import SweepError
from bn_inception.workdir_lock import workdir_holder

SLURM_FOLDER = "slurm"
SUBMIT_LOCK = ".submit.lock"


def job_folder(workdir: str, name: str) -> str:
  """submitit's folder of member `name`: its job scripts, pickles and logs."""
  return os.path.join(sweep_runner.member_workdir(workdir, name), SLURM_FOLDER)


def _absolute_local(workdir: str) -> str:
  if not workdir_lib.is_local(workdir):
    raise SweepError(f"--launcher=slurm needs a --workdir on a filesystem the nodes share "
                     f"(a path, not {workdir}): submitit keeps each job's files there.")
  return os.path.abspath(workdir)


def _jobs(workdir: str, names: Sequence[str]):
  """({name: [job id, ...] oldest first}, {job id: JobState}) of these members."""
  ids = {n: launch.submitted_jobs(job_folder(workdir, n)) for n in names}
  states = launch.job_states([j for n in names for j in ids[n]])
  return ids, states


def _failure(folder: str, job_id: str) -> str:
  """'<last error line> (log <stderr log>)' of a failed job."""
  error = launch.last_error(folder, job_id)
  return f"{error + ' ' if error else ''}(log {launch.log_paths(folder, job_id)[1]})"


# ------------------------------------------------------------------------------ submit


@dataclasses.dataclass
class Submission:
  name: str
  action: str      # submitted | finished | active | busy | failed
  job_id: str = ""
  detail: str = ""


def submit_sweep(spec: str, workdir: str, resources, only: Optional[Sequence[str]] = None,
                 max_failures: int = 2, out: Optional[TextIO] = None) -> List[Submission]:
  """Submit each chosen member that needs it as one SLURM job; return at once.

  Everything is checked before anything is submitted: the resource request
  (`sbatch --test-only`, SLURM's reason in one line), every member's overrides and
  directory (sweep_runner.prepare), and the scheduler's records of earlier jobs.
  """
  out = out or sys.stdout
  workdir = _absolute_local(workdir)
  if max_failures < 1:
    raise SweepError(f"--max_failures={max_failures} must be at least 1.")
  launch.validate(resources, "sweep-check")
  resolved = sweep_runner.prepare(spec, workdir, only, slurm=resources.to_dict())
  with _one_submitter(workdir):
    plan = _plan(workdir, resolved, max_failures)
    _submit(workdir, resolved, plan, resources, out)
  return plan


@contextlib.contextmanager
def _one_submitter(workdir: str):
  """Hold <workdir>/.submit.lock: two submissions of one sweep at once would each see
  a member without a job; the second waits and then sees the first one's jobs."""
  import fcntl
  fd = os.open(os.path.join(workdir, SUBMIT_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)


def _plan(workdir: str, resolved, max_failures: int) -> List[Submission]:
  """What to do with each member, from its workdir, lock and jobs."""
  ids, states = _jobs(workdir, [r.name for r in resolved])
  plan: List[Submission] = []
  for r in resolved:
    run_dir, folder = sweep_runner.member_workdir(workdir, r.name), job_folder(workdir, r.name)
    status, step = sweep_runner.member_status(run_dir, r.num_steps)
    active = [j for j in ids[r.name] if states[j].active]
    failed = [j for j in ids[r.name] if states[j].state == "failed"]
    holder = None if active else workdir_holder(run_dir)
    if status == "finished" and not active:
      plan.append(Submission(r.name, "finished", detail=f"checkpoint at step {step}"))
    elif active:
      j = active[-1]
      plan.append(Submission(r.name, "active", j, f"job {j} is {states[j].state}"))
    elif holder:
      plan.append(Submission(r.name, "busy", detail=f"{run_dir} is in use by {holder}"))
    elif len(failed) >= max_failures:
      plan.append(Submission(r.name, "failed", failed[-1],
                             f"{len(failed)} failed job(s) (--max_failures={max_failures}); "
                             f"last: {_failure(folder, failed[-1])}"))
    else:
      what = "starting" if status == "new" else f"resuming from step {step}"
      retry = f"; retry {len(failed)} of {max_failures - 1}" if failed else ""
      plan.append(Submission(r.name, "submitted", detail=f"{what} of {r.num_steps}{retry}"))
  return plan


def _submit(workdir: str, resolved, plan: Sequence[Submission], resources, out) -> None:
  """Submit the members `plan` says to (setting their job ids); one line per member."""
  by_name = {r.name: r for r in resolved}
  for p in plan:
    if p.action == "submitted":
      argv = sweep_runner.command(by_name[p.name], workdir, python=sys.executable)
      folder = job_folder(workdir, p.name)
      p.job_id = launch.submit(argv, folder, resources,
                               f"{os.path.basename(workdir)}.{p.name}")
      line = (f"submitted as job {p.job_id} ({p.detail}); log "
              f"{launch.log_paths(folder, p.job_id)[0]}")
    elif p.action == "finished":
      line = f"finished ({p.detail}); skipped."
    elif p.action == "failed":
      line = f"failed, not submitted again: {p.detail}"
    else:
      line = f"{p.detail}; not submitted."
    print(f"[sweep] {p.name}: {line}", file=out, flush=True)


def cancel_sweep(spec: str, workdir: str, only: Optional[Sequence[str]] = None,
                 out: Optional[TextIO] = None) -> Dict[str, str]:
  """Cancel the pending and running jobs of the chosen members: {job id: member}."""
  out = out or sys.stdout
  names = [r.name for r in sweep_runner.members_to_run(spec, only)[1]]
  ids, states = _jobs(workdir, names)
  active = {j: n for n in names for j in ids[n] if states[j].active}
  launch.cancel(sorted(active, key=int))
  for j, n in active.items():
    print(f"[sweep] {n}: cancelled job {j} ({states[j].state})", file=out)
  if not active:
    print(f"[sweep] no pending or running jobs in {workdir}", file=out)
  return active


# ------------------------------------------------------------------------------ status


@dataclasses.dataclass
class MemberStatus:
  """One row of `status_table`."""
  name: str
  state: str     # not started | pending | running | preempted+requeued | finished | failed
  #                | cancelled | interrupted (stopped before num_steps, nothing running)
  job: str       # latest SLURM job id, or 'pid N' for a local run holding the workdir
  step: int      # newest step in a checkpoint or in metrics.jsonl
  num_steps: int
  accuracy: Optional[float] = None       # latest eval/accuracy, at accuracy_step
  accuracy_step: Optional[int] = None
  updated: Optional[float] = None        # newest metrics.jsonl / checkpoint time
  detail: str = ""                       # a failure's last error and log; a lock's holder


_JOB_STATES = {"pending": "pending", "running": "running", "requeued": "preempted+requeued",
               "failed": "failed", "cancelled": "cancelled", "completed": "interrupted"}


def status(spec: str, workdir: str, only: Optional[Sequence[str]] = None
           ) -> List[MemberStatus]:
  """Where each chosen member stands, from its workdir and (when it has jobs) SLURM.
  Without SLURM on this machine, members with jobs get state 'unknown' and the reason."""
  from bn_inception import report_runs
  resolved = sweep_runner.members_to_run(spec, only)[1]
  names = [r.name for r in resolved]
  ids = {n: launch.submitted_jobs(job_folder(workdir, n)) for n in names}
  unreachable = ""
  try:
    states = launch.job_states([j for n in names for j in ids[n]])
  except launch.LaunchError as e:
    states, unreachable = {}, str(e)

  rows = []
  for r in resolved:
    run_dir = sweep_runner.member_workdir(workdir, r.name)
    saved = workdir_lib.finished_steps(run_dir)
    logged = workdir_lib.read_metrics(run_dir)
    evals = report_runs.eval_curve(logged)
    times = [t for t in (_mtime(workdir_lib.metrics_path(run_dir)),
                         workdir_lib.saved_time(run_dir, saved[-1]) if saved else None) if t]
    row = MemberStatus(r.name, "", "", max(saved[-1:] + list(logged)[-1:] + [0]), r.num_steps,
                       evals[-1][1] if evals else None, evals[-1][0] if evals else None,
                       max(times) if times else None)
    finished = r.num_steps in saved
    job_ids = ids[r.name]
    if job_ids:
      job = states.get(job_ids[-1])
      row.job = job_ids[-1]
      if job is None:
        row.state, row.detail = "unknown", unreachable
      elif finished and not job.active:
        row.state = "finished"
      else:
        row.state = _JOB_STATES.get(job.state, job.state)
        if job.state == "failed":
          row.detail = f"{job.slurm_state}: {_failure(job_folder(workdir, r.name), row.job)}"
        elif job.restarts and job.state == "running":
          row.detail = f"requeued {job.restarts}x"
    else:
      holder = workdir_holder(run_dir)
      local_error = _local_error(run_dir)
      if finished:
        row.state = "finished"
      elif holder:
        row.state, row.job, row.detail = "running", " ".join(holder.split()[:2]), holder
      elif local_error:
        row.state, row.detail = "failed", local_error
      elif saved or logged:
        row.state = "interrupted"
      else:
        row.state = "not started"
    rows.append(row)
  return rows


def _mtime(path: str) -> Optional[float]:
  try:
    return os.path.getmtime(path)
  except OSError:
    return None


def _local_error(run_dir: str) -> str:
  """The last `error:` line of the newest run in <member>/sweep.log (scripts/sweep.py's
  log of a local member), with the log's path; '' if that run had none."""
  path = os.path.join(run_dir, workdir_lib.SWEEP_LOG)
  try:
    with open(path, errors="replace") as f:
      lines = f.read().splitlines()
  except OSError:
    return ""
  starts = [i for i, line in enumerate(lines) if line.startswith("# ")]
  errors = [l.strip() for l in lines[starts[-1] if starts else 0:] if l.startswith("error:")]
  return f"{errors[-1]} (log {path})" if errors else ""


def _percent(x: Optional[float]) -> str:
  return "–" if x is None else f"{100 * x:.2f}%"


def status_table(rows: Sequence[MemberStatus]) -> str:
  """Aligned columns: member, state, job, step, eval accuracy, updated; then one line per
  member with something to say (a failure's error and log), then the counts."""
  head = ("member", "state", "job", "step", "eval accuracy", "updated")
  cells = [head] + [
      (r.name, r.state, r.job or "–", f"{r.step}/{r.num_steps}",
       _percent(r.accuracy) + ("" if r.accuracy_step is None else f" @ {r.accuracy_step}"),
       "–" if r.updated is None else time.strftime("%Y-%m-%d %H:%M:%S",
                                                    time.localtime(r.updated)))
      for r in rows]
  widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
  lines += [f"{r.name}: {r.state}: {r.detail}" for r in rows if r.detail]
  counts: Dict[str, int] = {}
  for r in rows:
    counts[r.state] = counts.get(r.state, 0) + 1
  lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
  return "\n".join(lines)
