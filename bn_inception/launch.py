"""Command lines as SLURM jobs, through submitit: resources, submit, states, cancel.

It launches command lines (`python scripts/train.py ...`, `python scripts/evaluate.py ...`)
and knows nothing of models or data. One command line is one SLURM job; each of its tasks
(one per GPU, or one) runs the command from the repo root, and a multi-task job's processes
find each other from the SLURM environment (config.distributed=auto).

Preemption and time limits. A job asks SLURM for a notice (submitit's `--signal=USR2@delay`)
`signal_delay_s` before its time limit; `scancel --signal=USR2` sends the same notice. The
trainer never sees USR2 (it starts with USR2 ignored): `CommandJob` passes the notice on as
the trainer's own stop signal, SIGTERM, on which it finishes its step, checkpoints and exits
(signals.StopSignals in the training loop). On task 0 submitit then calls
`CommandJob.checkpoint()` (slurm_job.py), which waits for that exit and hands submitit a fresh copy of the
job; submitit requeues it (`scontrol requeue`)
and the requeued job reruns the same command, which resumes from the checkpoint. A SIGTERM
from SLURM itself (preemption with PreemptMode=REQUEUE, `scontrol requeue`, `scancel`, the
time limit) also reaches the trainer, which checkpoints; SLURM then requeues or ends the job
as it decided. Jobs are submitted with `--requeue`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import ml_collections

from bn_inception.slurm_job import CommandJob
from bn_inception.workdir import REPO_ROOT

NO_SBATCH = ("`sbatch` was not found on PATH: this machine is not a SLURM submit host. Use "
             "--launcher=local to run here, or --print_commands to print the commands for "
             "another scheduler.")

# sacct's job states -> ours. A PENDING job that ran before is 'requeued' (see JobState).
_STATES = {
    "PENDING": "pending", "CONFIGURING": "pending", "REQUEUED": "requeued",
    "REQUEUE_FED": "requeued", "REQUEUE_HOLD": "requeued", "RESIZING": "running",
    "RUNNING": "running", "COMPLETING": "running", "SUSPENDED": "running",
    "STAGE_OUT": "running", "SIGNALING": "running", "COMPLETED": "completed",
    "CANCELLED": "cancelled", "FAILED": "failed", "TIMEOUT": "failed", "NODE_FAIL": "failed",
    "OUT_OF_MEMORY": "failed", "BOOT_FAIL": "failed", "DEADLINE": "failed",
    "PREEMPTED": "failed", "SPECIAL_EXIT": "failed", "REVOKED": "cancelled",
}
ACTIVE_STATES = ("pending", "running", "requeued")


class LaunchError(ValueError):
  """A job could not be submitted or looked up: the message is one line for the user."""


# ------------------------------------------------------------------------------ resources


def slurm_config() -> ml_collections.ConfigDict:
  """What each job asks SLURM for. A sweep file may set it as `config.slurm`.

  The paper's ImageNet members (Sec. 4.2) ask for 1 node x 8 GPUs: gpus_per_node=8,
  tasks_per_node=0 (one task, i.e. one JAX process, per GPU).
  """
  c = ml_collections.ConfigDict()
  c.nodes = 1
  c.gpus_per_node = 0          # 0: no GPU requested
  c.tasks_per_node = 0         # 0: one per GPU (one if no GPU)
  c.cpus_per_task = 1
  c.mem_gb = 0.0               # per node; 0: the cluster's default
  c.time_min = 24 * 60         # time limit of one job; a job that reaches it is requeued
  c.partition = ""             # "": the cluster's default
  c.account = ""
  c.qos = ""
  c.constraint = ""
  c.signal_delay_s = 120       # USR2 this long before the time limit: time to checkpoint
  c.max_requeues = 10          # requeues after a time limit (preemptions do not count)
  # Any other sbatch option, e.g. {"exclusive": True, "mail-type": "END"} (--name=value).
  c.sbatch_options = ml_collections.ConfigDict()
  return c


def resources(fields: Optional[Mapping[str, object]] = None) -> ml_collections.ConfigDict:
  """`slurm_config()` with `fields` set (e.g. a sweep file's `get_resources()`), locked:
  an unknown field or a value of the wrong type is a LaunchError naming it.
  `sbatch_options` takes any sbatch option."""
  r = slurm_config()
  r.lock()
  for field, value in dict(fields or {}).items():
    if field not in r:
      raise LaunchError(f"unknown SLURM resource field {field!r}; the fields are "
                        f"{', '.join(r.keys())} (bn_inception/launch.py slurm_config).")
    try:
      if field == "sbatch_options":
        with r.sbatch_options.unlocked():
          r.sbatch_options.update(dict(value))
      else:
        setattr(r, field, value)
    except (TypeError, ValueError) as e:
      raise LaunchError(f"slurm.{field}={value!r}: {e}") from None
  return r


def tasks_per_node(resources) -> int:
  return resources.tasks_per_node or max(1, resources.gpus_per_node)


def describe(resources) -> str:
  """One line, e.g. '1 node x 8 GPUs, 8 task(s)/node, 4 CPU(s)/task, 1440 min, partition gpu'."""
  parts = [f"{resources.nodes} node{'s' * (resources.nodes != 1)}"
           + (f" x {resources.gpus_per_node} GPUs" if resources.gpus_per_node else ""),
           f"{tasks_per_node(resources)} task(s)/node", f"{resources.cpus_per_task} CPU(s)/task",
           f"{resources.time_min} min"]
  parts += [f"{k} {getattr(resources, k)}" for k in ("partition", "account", "qos",
                                                     "constraint") if getattr(resources, k)]
  return ", ".join(parts)


def _sbatch_parameters(resources, name: str) -> Dict[str, object]:
  """Our resource section as submitit.SlurmExecutor parameters (checked first)."""
  for field in ("nodes", "cpus_per_task", "time_min"):
    if int(resources[field]) < 1:
      raise LaunchError(f"slurm.{field}={resources[field]} must be at least 1.")
  for field in ("gpus_per_node", "tasks_per_node", "mem_gb", "signal_delay_s", "max_requeues"):
    if resources[field] < 0:
      raise LaunchError(f"slurm.{field}={resources[field]} must not be negative.")
  extra = {"requeue": True, "chdir": REPO_ROOT, **dict(resources.sbatch_options)}
  params = dict(job_name=name, nodes=int(resources.nodes),
                ntasks_per_node=tasks_per_node(resources),
                cpus_per_task=int(resources.cpus_per_task), time=int(resources.time_min),
                signal_delay_s=int(resources.signal_delay_s), additional_parameters=extra)
  if resources.gpus_per_node:
    params["gpus_per_node"] = int(resources.gpus_per_node)
  if resources.mem_gb:
    params["mem"] = f"{int(round(resources.mem_gb * 1024))}M"
  for field in ("partition", "account", "qos", "constraint"):
    if resources[field]:
      params[field] = str(resources[field])
  return params


def _require_sbatch() -> None:
  if shutil.which("sbatch") is None:
    raise LaunchError(NO_SBATCH)


def _executor(folder: str, resources, name: str):
  _require_sbatch()
  import submitit
  executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=int(resources.max_requeues))
  executor.update_parameters(**_sbatch_parameters(resources, name))
  return executor


def _slurm_reason(output: str) -> str:
  """sbatch's reason for refusing a job, as one line."""
  lines = [line.strip() for line in output.splitlines() if line.strip()]
  reasons = [line for line in lines if "error:" in line or "failure:" in line] or lines[-1:]
  reason = reasons[-1] if reasons else "no reason given"
  for prefix in ("sbatch: error: ", "Batch job submission failed: ", "allocation failure: "):
    reason = reason.split(prefix, 1)[-1]
  return reason


def validate(resources, name: str = "check") -> None:
  """Ask SLURM whether it would run a job with `resources` (`sbatch --test-only`: nothing
  is queued). Raises LaunchError with SLURM's reason, e.g. 'Requested node configuration
  is not available' (more GPUs than a node has), 'Invalid partition name specified'.
  `submit` checks its own job so; a sweep checks every distinct request before submitting
  any member, so nothing is half-submitted."""
  with tempfile.TemporaryDirectory(prefix="bn_inception_slurm_check_") as folder:
    _test_only(_executor(folder, resources, name), resources)


def _test_only(executor, resources) -> None:
  """`sbatch --test-only` on exactly the script submitit would send. Unlike a plain
  sbatch, which on a cluster without EnforcePartLimits queues an impossible job to pend
  forever, it refuses a request no node or partition can meet."""
  with tempfile.NamedTemporaryFile("w", suffix=".sh") as script:
    script.write(executor._make_submission_file_text("true", "check"))
    script.flush()
    proc = subprocess.run(["sbatch", "--test-only", script.name], capture_output=True,
                          text=True, timeout=60)
  if proc.returncode != 0:
    raise LaunchError(f"SLURM would not run a job with {describe(resources)}: "
                      f"{_slurm_reason(proc.stderr + proc.stdout)}")


# ------------------------------------------------------------------------------ submit


def submit(argv: Sequence[str], folder: str, resources, name: str,
           env: Optional[Mapping[str, str]] = None, cwd: str = REPO_ROOT) -> str:
  """Submit `argv` (run in `cwd`, the repo root by default) as one SLURM job; return its
  job id at once.

  `folder` holds submitit's files: `<id>_submission.sh`, `<id>_submitted.pkl` and the
  logs `<id>_<task>_log.out/err` (see `log_paths`). `env` is added to the job's
  environment. Raises LaunchError (one line, nothing queued, nothing left in `folder`)
  when there is no sbatch or SLURM refuses the request.
  """
  folder = os.path.abspath(folder)
  executor = _executor(folder, resources, name)
  _test_only(executor, resources)
  created = not os.path.exists(folder)
  before = set(os.listdir(folder)) if not created else set()
  try:
    with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr
      job = executor.submit(CommandJob(argv, env, cwd))
  except Exception as e:  # submitit: FailedJobError carrying sbatch's stderr
    _remove_new_files(folder, before, created)
    raise LaunchError(f"SLURM refused job {name!r} ({describe(resources)}): "
                      f"{_slurm_reason(str(e))}") from None
  return str(job.job_id)


def _remove_new_files(folder: str, before: set, created: bool) -> None:
  if not os.path.isdir(folder):
    return
  for entry in set(os.listdir(folder)) - before:
    path = os.path.join(folder, entry)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      os.unlink(path)
  if created and not os.listdir(folder):
    os.rmdir(folder)


def submitted_jobs(folder: str) -> List[str]:
  """Ids of the jobs submitted from `folder`, oldest first."""
  ids = [p.name.split("_", 1)[0] for p in Path(folder).glob("*_submitted.pkl")]
  return sorted(set(ids), key=int)


def log_paths(folder: str, job_id: str, task: int = 0) -> Tuple[str, str]:
  """(stdout, stderr) of task `task` of `job_id`; a requeued job appends to the same files."""
  folder = os.path.abspath(folder)
  return (os.path.join(folder, f"{job_id}_{task}_log.out"),
          os.path.join(folder, f"{job_id}_{task}_log.err"))


def last_error(folder: str, job_id: str) -> str:
  """The command's last `error: ...` line in the job's logs ('' if none)."""
  found = ""
  for path in log_paths(folder, job_id):
    try:
      with open(path, errors="replace") as f:
        for line in f:
          if line.startswith("error:"):
            found = line.strip()
    except FileNotFoundError:
      pass
  return found


# ------------------------------------------------------------------------------ state


@dataclasses.dataclass(frozen=True)
class JobState:
  """Where a job stands. `state`: pending, running, requeued (back in the queue after a
  preemption or time limit, to start again), completed, failed, cancelled or unknown;
  `slurm_state`: SLURM's own word (e.g. TIMEOUT, 'CANCELLED by 0'); `restarts`: how many
  times it was requeued."""
  job_id: str
  state: str
  slurm_state: str
  restarts: int = 0

  @property
  def active(self) -> bool:
    return self.state in ACTIVE_STATES


def _run_slurm(argv: List[str]) -> str:
  if shutil.which(argv[0]) is None:
    raise LaunchError(NO_SBATCH.replace("`sbatch`", f"`{argv[0]}`"))
  proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
  if proc.returncode != 0:
    raise LaunchError(f"{shlex.join(argv[:2])} ... failed: {_slurm_reason(proc.stderr)}")
  return proc.stdout


def job_states(job_ids: Sequence[str]) -> Dict[str, JobState]:
  """The state of each job, from the accounting records (`sacct`, every requeue included)
  and, for a job not yet in them, the queue (`squeue`)."""
  ids = [str(j) for j in job_ids]
  if not ids:
    return {}
  out = _run_slurm(["sacct", "-X", "-D", "-P", "-n", "-o", "JobIDRaw,State",
                    "-j", ",".join(ids)])
  records: Dict[str, List[str]] = {}
  for line in out.splitlines():
    job_id, _, raw = line.partition("|")
    records.setdefault(job_id.strip(), []).append(raw.strip())
  missing = [j for j in ids if j not in records]
  if missing:
    queue = _run_slurm(["squeue", "-h", "-o", "%i|%T", "-j", ",".join(missing)])
    for line in queue.splitlines():
      job_id, _, raw = line.partition("|")
      records.setdefault(job_id.strip(), []).append(raw.strip())
  states = {}
  for j in ids:
    history = records.get(j, [])
    if not history:
      states[j] = JobState(j, "unknown", "")
      continue
    raw = history[-1]
    restarts = sum(r.startswith("REQUEUE") or r == "PREEMPTED" for r in history[:-1])
    state = _STATES.get(raw.split()[0], "unknown")
    if state == "pending" and restarts:
      state = "requeued"
    states[j] = JobState(j, state, raw, restarts)
  return states


def cancel(job_ids: Sequence[str]) -> None:
  """Cancel these jobs (queued or running; a running command gets SIGTERM, checkpoints,
  then SLURM kills what is left). Jobs already ended are ignored."""
  ids = [str(j) for j in job_ids]
  if ids:
    _run_slurm(["scancel", *ids])


# ------------------------------------------------------------------------------ flags

LAUNCHERS = ("local", "slurm")
_LAUNCHER_FLAG = re.compile(r"^--?(launcher|slurm\.[A-Za-z0-9_.]+)(=|$)")


def define_flags() -> None:
  """--launcher=local|slurm and --slurm.<field>=<value>, the same in every script that can
  run as a job (scripts/sweep.py, scripts/evaluate.py)."""
  from absl import flags
  from ml_collections import config_flags
  from bn_inception import overrides
  argv = sys.argv
  try:
    overrides.check_flags(slurm_config(), argv[1:], "slurm")
  except overrides.OverrideError:  # cli.parse_flags reports it, in one line
    argv = argv[:1]               # (config_flags would raise here, with a traceback)
  flags.DEFINE_enum("launcher", "local", LAUNCHERS, "local: run here; slurm: submit as "
                    "SLURM job(s) and return at once (needs sbatch; see docs/cluster.md).")
  config_flags.DEFINE_config_dict("slurm", slurm_config(), "What each SLURM job asks for "
                                  "(--launcher=slurm), e.g. --slurm.gpus_per_node=8 "
                                  "--slurm.partition=gpu; fields: bn_inception/launch.py "
                                  "slurm_config().", sys_argv=argv)


def flag_resources(fields: Optional[Mapping[str, object]] = None) -> ml_collections.ConfigDict:
  """`resources(fields)` (e.g. a sweep file's) with the command line's --slurm.<field>
  values over them: the command line wins."""
  from absl import flags
  r = resources(fields)
  r.update_from_flattened_dict(dict(flags.FLAGS["slurm"].override_values))
  return r


def without_launcher_flags(argv: Sequence[str]) -> List[str]:
  """argv minus --launcher and --slurm.* (`--f=v` or `--f v`): the command the job runs."""
  out, skip = [], False
  for arg in argv:
    if skip:
      skip = False
      continue
    match = _LAUNCHER_FLAG.match(arg)
    if match:
      skip = match.group(2) == ""
      continue
    out.append(arg)
  return out
