"""The sweep runner: load a sweep file, check every member, then print or run them.

  outcomes = run_sweep("configs/sweeps/lr_acceleration_cpu.py", "runs/lr_cpu")

Overrides are taken exactly as `scripts/train.py --config=<file> --config.<field>=<value>`
takes them (bn_inception/overrides.py): each value is written as its command-line text
and read back by the same parser the command line's values are checked with. So the
launch lines of `--print_commands` and the runs of the sweep are the same runs, and a
value the command line cannot express (or an unknown field, or a wrong type) is refused
-- for every member, before anything runs. Members run one after another, each as its
own scripts/train.py process (or in this process), in <workdir>/<name>; finished ones
are skipped, interrupted ones resume; SIGTERM/SIGINT stops the running member at a
checkpoint and starts no other. The vocabulary sweep files use is bn_inception/sweep.py.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, List, Optional, Sequence, Tuple

import ml_collections

# report_*: imported now, not when the first member ends: code edited (or pulled) while
# a member trains must not meet the modules this process already holds.
from bn_inception import (config_checks, config_files, overrides, progress, report_hparams,
                          report_runs)
from bn_inception import workdir as workdir_lib
from bn_inception.signals import StopSignals, Stopped
from bn_inception.sweep import Member, SweepError
from bn_inception.workdir import REPO_ROOT, SWEEP_LOG, SWEEP_MANIFEST

TRAIN_SCRIPT = "scripts/train.py"
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


# ---------------------------------------------------------------------------- sweep files


def _flatten(items) -> List[Any]:
  out = []
  for item in items:
    if isinstance(item, (list, tuple)):
      out.extend(_flatten(item))
    else:
      out.append(item)
  return out


def resolve_path(path: str) -> Optional[str]:
  """A path as written in a sweep file: absolute, repo-relative, or relative to the cwd."""
  if os.path.isabs(path):
    return path if os.path.exists(path) else None
  for root in (REPO_ROOT, os.getcwd()):
    candidate = os.path.join(root, path)
    if os.path.exists(candidate):
      return os.path.abspath(candidate)
  return None


def _call(spec: str, function: str, required: bool = True) -> Any:
  """`function()` (or `function(arg)`) of sweep file `spec`; None if it has none and
  it is not required."""
  path, _ = config_files.split_spec(spec)
  full = resolve_path(path)
  if full is None:
    raise SweepError(f"Sweep file {path} not found (looked in {REPO_ROOT} and {os.getcwd()}).")
  try:
    return config_files.load(spec, function, full_path=full, shown=path, required=required)
  except config_files.ConfigFileError as e:
    raise SweepError(str(e)) from e


def load_sweep(spec: str) -> List[Member]:
  """The members of sweep file `spec` ('file.py' or 'file.py:arg'), checked for names."""
  path, _ = config_files.split_spec(spec)
  result = _call(spec, "get_sweep")
  found = _flatten(result if isinstance(result, (list, tuple)) else [result])
  bad = [m for m in found if not isinstance(m, Member)]
  if bad:
    raise SweepError(f"Sweep file {path}: get_sweep() must return Members (see "
                     f"bn_inception/sweep.py), got {type(bad[0]).__name__}: {bad[0]!r:.200}.")
  if not found:
    raise SweepError(f"Sweep file {spec}: get_sweep() returned no members.")
  seen = set()
  for m in found:
    if not _NAME_OK.match(m.name):
      raise SweepError(f"Sweep member name {m.name!r} is not usable as a directory name: use "
                       "letters, digits and . _ + = - (give product(..., label=...) a "
                       "plain label).")
    if m.name in seen:
      raise SweepError(f"Sweep {spec} has two members named {m.name!r}.")
    seen.add(m.name)
  return found


def select(members_: Sequence[Member], only: Optional[Sequence[str]]) -> List[Member]:
  """Members whose name matches one of `only` (names or shell patterns); all when empty."""
  if not only:
    return list(members_)
  names = [m.name for m in members_]
  unmatched = [p for p in only if not fnmatch.filter(names, p)]
  if unmatched:
    raise SweepError(f"--only {', '.join(unmatched)} matches no member; members: "
                     f"{', '.join(names)}.")
  return [m for m in members_ if any(fnmatch.fnmatchcase(m.name, p) for p in only)]


# ------------------------------------------------------------------------ members


@dataclasses.dataclass
class ResolvedMember:
  """A member ready to run: its final config and the command line that builds it."""
  name: str
  config: Any                  # the ConfigDict the run uses
  config_arg: Optional[str]    # --config value (repo-relative path[:arg]); None for ConfigDicts
  load_arg: Optional[str]      # absolute path[:arg] used to load it here
  override_args: List[str]     # ["--config.<field>=<value>", ...]

  @property
  def num_steps(self) -> int:
    return int(self.config.train.num_steps)


def _display_path(full: str) -> str:
  rel = os.path.relpath(full, REPO_ROOT)
  return full if rel.startswith("..") else rel


def resolve(member: Member) -> ResolvedMember:
  """Load a member's base config and apply its overrides as the command line would.

  Raises SweepError naming the member and the field for an unknown field, a wrong
  type, or a value the command line cannot express.
  """
  who = f"Sweep member {member.name!r}"
  if isinstance(member.config, str):
    path, arg = config_files.split_spec(member.config)
    full = resolve_path(path)
    if full is None:
      raise SweepError(f"{who}: config file {path} not found (looked in {REPO_ROOT} and "
                       f"{os.getcwd()}).")
    suffix = "" if arg is None else f":{arg}"
    load_arg, config_arg = full + suffix, _display_path(full) + suffix
    try:
      base = config_files.load_config(member.config, full_path=full, shown=path)
    except config_files.ConfigFileError as e:
      raise SweepError(f"{who}: base config {member.config} could not be loaded: {e}") from e
  elif isinstance(member.config, ml_collections.ConfigDict):
    load_arg = config_arg = None
    base = copy.deepcopy(member.config)
    base.lock()
  else:
    raise SweepError(f"{who}: config must be a 'configs/<file>.py[:arg]' path or a "
                     f"ConfigDict, not {type(member.config).__name__}.")
  try:
    texts = {field: overrides.check(base, field, value)
             for field, value in member.overrides.items()}
    config = overrides.apply_text(copy.deepcopy(base), [f"{f}={t}" for f, t in texts.items()])
  except overrides.OverrideError as e:
    raise SweepError(f"{who}: {e} Nothing was run.") from e
  try:
    config_checks.validate(config)  # the training loop's own check, before any member runs
  except config_checks.ConfigError as e:
    raise SweepError(f"{who}: {e}") from e
  args = [f"--config.{field}={text}" for field, text in texts.items()]
  return ResolvedMember(member.name, config, config_arg, load_arg, args)


def _one_line(e: BaseException) -> str:
  lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
  if not lines:
    return ""
  return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


# --------------------------------------------------------------------------- workdirs


def member_workdir(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)


def member_status(run_dir: str, num_steps: int) -> Tuple[str, int]:
  """('finished', num_steps) | ('interrupted', last checkpoint step) | ('new', 0)."""
  steps = workdir_lib.finished_steps(run_dir)
  if num_steps in steps:
    return "finished", num_steps
  if steps:
    return "interrupted", max(steps)
  return "new", 0


def check_workdirs(workdir: str, resolved: Sequence[ResolvedMember]) -> None:
  """Refuse, before anything runs, member directories that hold a different run: the
  training loop's own rule (workdir_config.check_or_save_config), checked for every member."""
  from bn_inception import workdir_config
  problems = []
  for r in resolved:
    try:
      workdir_config.check_or_save_config(member_workdir(workdir, r.name), r.config, save=False)
    except workdir_lib.WorkdirConfigError as e:
      diffs = [line.strip() for line in str(e).splitlines()[1:-1]]
      problems.append(f"  {r.name}: " + "; ".join(diffs[:4]) +
                      (f"; ... ({len(diffs)} fields)" if len(diffs) > 4 else ""))
  if problems:
    raise SweepError(f"Member directories in {workdir} hold runs with other settings:\n" +
                     "\n".join(problems) + "\nUse a new --workdir, or restore the sweep file's "
                     "settings to resume them. Nothing was run.")


# ----------------------------------------------------------------------------- commands


def command(r: ResolvedMember, workdir: str, python: str = "python") -> List[str]:
  """argv of the scripts/train.py run of member `r` in <workdir>/<name> (from the repo root)."""
  if r.config_arg is None:
    raise SweepError(f"Sweep member {r.name!r} has a ConfigDict base config, which has no "
                     "command line; give it a 'configs/<file>.py[:arg]' path to print or "
                     "launch it as a command.")
  return [python, TRAIN_SCRIPT, f"--config={r.config_arg}",
          f"--workdir={member_workdir(workdir, r.name)}", *r.override_args]


def shell_line(argv: Sequence[str]) -> str:
  return " ".join(shlex.quote(a) for a in argv)


def _workdir_for_children(workdir: str) -> str:
  """Children run from the repo root: make a local relative workdir absolute."""
  if not workdir_lib.is_local(workdir) or os.path.isabs(workdir):
    return workdir
  return os.path.abspath(workdir)


def write_manifest(workdir: str, spec: str, resolved: Sequence[ResolvedMember],
                   **extra) -> str:
  """<workdir>/sweep.json: the sweep's members in order, their configs and commands
  (and `extra`, e.g. the SLURM resources of a submitted sweep)."""
  from etils import epath
  path = epath.Path(workdir) / SWEEP_MANIFEST
  path.parent.mkdir(parents=True, exist_ok=True)
  rows = []
  for r in resolved:
    rows.append({"name": r.name, "config": r.config_arg,
                 "overrides": r.override_args, "num_steps": r.num_steps,
                 "command": shell_line(command(r, workdir)) if r.config_arg else None})
  path.write_text(json.dumps({"sweep": spec, **extra, "members": rows}, indent=2) + "\n")
  return str(path)


# ------------------------------------------------------------------------------ running


def _run_subprocess(argv: List[str], log_path: str, interrupt: StopSignals, out,
                    bar: Optional[progress.Progress] = None) -> Tuple[int, str]:
  """Run argv from the repo root, its output to `out` and appended to log_path; `bar`
  (a live one, on a terminal) follows the step the member has logged in its workdir."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  last_error = ""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a") as log:
    log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {shell_line(argv)}\n")
    # Its own session: a Ctrl-C at the terminal reaches the runner only, which passes
    # it on once (the member would take a second copy as "abort at once").
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
    interrupt.child = proc
    try:
      checked = 0.0
      for line in proc.stdout:
        log.write(line)
        progress.echo(line, out)  # its own lines carry step, loss and ETA
        if bar is not None and time.time() - checked > 2:
          checked = time.time()
          bar.update_to(workdir_lib.last_logged_step(os.path.dirname(log_path)) or 0)
        if line.startswith("error:"):
          last_error = line[len("error:"):].strip()
      rc = proc.wait()
    finally:
      interrupt.child = None
  return rc, last_error


def _run_inprocess(config, run_dir: str) -> Tuple[int, str]:
  from bn_inception import cli, train
  try:
    result = train.train_and_evaluate(config, run_dir)
  except Stopped:  # during its start-up: nothing was saved
    return 0, "stopped"
  except cli.USER_ERRORS + (train.NonFiniteError,) as e:
    return 2, _one_line(e)
  return (0, "") if "preempted_at_step" not in result else (0, "preempted")


def members_to_run(spec: str, only: Optional[Sequence[str]] = None
                   ) -> Tuple[List[ResolvedMember], List[ResolvedMember]]:
  """(every member, the chosen ones), each resolved: every member is checked first."""
  all_members = load_sweep(spec)
  chosen = {m.name for m in select(all_members, only)}
  all_resolved = [resolve(m) for m in all_members]
  return all_resolved, [r for r in all_resolved if r.name in chosen]


def prepare(spec: str, workdir: str, only: Optional[Sequence[str]] = None,
            as_commands: bool = True, **manifest_extra) -> List[ResolvedMember]:
  """Check every member and its directory before anything runs, write the manifest and
  return the chosen members. as_commands: each must have a command line (a subprocess
  or a job), which a ConfigDict base has not."""
  all_resolved, resolved = members_to_run(spec, only)
  check_workdirs(workdir, resolved)
  if as_commands:
    for r in resolved:
      command(r, workdir)  # ConfigDict members cannot run as a command: say so now
  write_manifest(workdir, spec, all_resolved, **manifest_extra)
  return resolved


def load_resources(spec: str):
  """The SLURM resources a sweep file asks for: its optional `get_resources()` (or
  `get_resources(arg)` for 'file.py:arg'), a mapping of bn_inception/launch.py
  slurm_config() fields, e.g. {"gpus_per_node": 8}; {} when it has none."""
  fields = _call(spec, "get_resources", required=False)
  if fields is None:
    return {}
  if not hasattr(fields, "items"):
    raise SweepError(f"Sweep file {config_files.split_spec(spec)[0]}: get_resources() must "
                     f"return a mapping of slurm fields, got {type(fields).__name__}.")
  return dict(fields.items())


@dataclasses.dataclass
class Outcome:
  name: str
  status: str        # finished | skipped | failed | stopped | not started
  step: int
  seconds: float = 0.0
  error: str = ""


def run_sweep(spec: str, workdir: str, only: Optional[Sequence[str]] = None,
              print_commands: bool = False, inprocess: bool = False, python: str = "python",
              out=None) -> List[Outcome]:
  """Validate every member, then print their commands or run them one after another.

  Finished members (a checkpoint at train.num_steps) are skipped; interrupted ones
  resume from their newest checkpoint (the loop's own resume). A member that fails
  (e.g. diverges) is reported and the sweep goes on; SIGTERM/SIGINT stops the running
  member at a checkpoint and starts no other.
  """
  out = out or sys.stdout
  if print_commands:
    for r in members_to_run(spec, only)[1]:
      print(shell_line(command(r, workdir, python)), file=out)
    return []
  resolved = prepare(spec, workdir, only, as_commands=not inprocess)
  outcomes: List[Outcome] = []
  with StopSignals() as interrupt:
    for i, r in enumerate(resolved, 1):
      who = f"{i}/{len(resolved)} {r.name}"
      run_dir = member_workdir(workdir, r.name)
      status, step = member_status(run_dir, r.num_steps)
      if interrupt.received:
        outcomes.append(Outcome(r.name, "not started", step))
      elif status == "finished":
        print(f"[sweep] {who}: finished (checkpoint at step {step}); skipped.",
              file=out, flush=True)
        outcomes.append(Outcome(r.name, "skipped", step))
      else:
        what = "starting" if status == "new" else f"resuming from step {step}"
        print(f"[sweep] {who}: {what} of {r.num_steps} in {run_dir}", file=out, flush=True)
        outcomes.append(_run_member(r, who, workdir, step, inprocess, interrupt, out))
  print(summary(outcomes), file=out, flush=True)
  if workdir_lib.is_local(workdir):  # TensorBoard's HParams dashboard compares the members
    report_hparams.write_hparams(workdir)
  return outcomes


def _run_member(r: ResolvedMember, who: str, workdir: str, step: int, inprocess: bool,
                interrupt: StopSignals, out) -> Outcome:
  """Run one member (from `step`) in this process or as its own; its outcome, printed."""
  run_dir = member_workdir(workdir, r.name)
  start = time.time()
  if inprocess:
    rc, error = _run_inprocess(r.config, run_dir)
  else:
    child_workdir = _workdir_for_children(workdir)
    argv = command(r, child_workdir, python=sys.executable)
    with progress.Progress(f"sweep {who}", r.num_steps, "step", initial=step,
                           live_only=True) as bar:
      rc, error = _run_subprocess(argv, os.path.join(child_workdir, r.name, SWEEP_LOG),
                                  interrupt, out, bar)
  seconds = time.time() - start
  status, step = member_status(run_dir, r.num_steps)
  if status == "finished":
    outcome = Outcome(r.name, "finished", step, seconds)
  elif rc == 0:  # stopped by a signal, to it or to the sweep, at a checkpoint
    outcome = Outcome(r.name, "stopped", step, seconds)
    interrupt.received = interrupt.received or signal.SIGTERM
  else:
    outcome = Outcome(r.name, "failed", step, seconds,
                      error or f"exit status {rc}; see {run_dir}/{SWEEP_LOG}")
  print(f"[sweep] {who}: {outcome.status} at step {outcome.step} "
        f"({progress.format_duration(seconds)}){_accuracy_note(run_dir)}"
        f"{': ' + outcome.error if outcome.error else ''}", file=out, flush=True)
  return outcome


def _accuracy_note(run_dir: str) -> str:
  """', eval/accuracy 0.9291 (max 0.9300 @1,500)' from a member's metrics.jsonl."""
  s = report_runs.summarize(os.path.basename(run_dir), workdir_lib.read_metrics(run_dir), 1.0)
  if s.final_accuracy is None:
    return ""
  return (f", {report_runs.METRIC} {s.final_accuracy:.4f} (max {s.max_accuracy:.4f} "
          f"@{s.max_step:,})")


def summary(outcomes: Sequence[Outcome]) -> str:
  lines = ["[sweep] summary:"]
  for o in outcomes:
    lines.append(f"  {o.name:<28} {o.status:<11} step {o.step:>9}"
                 + (f"  {o.seconds:7.0f} s" if o.seconds else "")
                 + (f"  {o.error}" if o.error else ""))
  return "\n".join(lines)
