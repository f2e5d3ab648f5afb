"""Sweeps: named runs of the one training loop, each a base config plus field overrides.

A sweep file (configs/sweeps/*.py) defines `get_sweep()` (or `get_sweep(arg)` for
`file.py:arg`) returning a list of `Member`s, e.g.

  from bn_inception.sweep import Member, members, product

  def get_sweep():
    return [Member("baseline", "configs/bn_x5.py:cpu"),
            *members("bn_x5", "configs/bn_x5.py:cpu",
                     product("optim.learning_rate", [0.1, 0.5, 1.0])
                     * product("bn.group_size", [8, 32]),
                     overrides={"bn.stats_mode": "group"})]

gives baseline, bn_x5-lr0.1-bn_group8, bn_x5-lr0.1-bn_group32, ... (six grid members).

Overrides are applied exactly as `scripts/train.py --config=<file> --config.<field>=<value>`
would apply them: each value is written as its command-line string and the config is
built by parsing those strings with ml_collections' config flags. So the launch lines of
`--print_commands` and the runs of the sweep are the same runs by construction, and a
value the command line cannot express (or an unknown field, or a wrong type) is refused
-- for every member, before anything runs.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import fnmatch
import importlib.util
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import ml_collections

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SCRIPT = "scripts/train.py"
MANIFEST = "sweep.json"
LOG_FILE = "sweep.log"
# Short labels for automatic member names; other fields use their last component.
SHORT_LABELS = {"optim.learning_rate": "lr", "bn.group_size": "bn_group",
                "train.batch_size": "batch", "optim.weight_decay": "wd",
                "optim.momentum": "mom", "seed": "seed", "bn.enabled": "bn",
                "model.activation": "", "model.dropout_rate": "dropout"}
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


class SweepError(ValueError):
  """A sweep file, member or override that cannot run; the message says which and why."""


# ---------------------------------------------------------------------------- sweep files


@dataclasses.dataclass(frozen=True)
class Member:
  """One run: `config` is 'configs/<file>.py[:arg]' (repo-relative) or a ConfigDict."""
  name: str
  config: Union[str, ml_collections.ConfigDict]
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Axis:
  """Labelled override sets; `a * b` is their Cartesian product (labels joined by '-')."""
  points: Tuple[Tuple[str, Mapping[str, Any]], ...]

  def __mul__(self, other: "Axis") -> "Axis":
    points = []
    for (la, oa), (lb, ob) in itertools.product(self.points, other.points):
      both = sorted(set(oa) & set(ob))
      if both:
        raise SweepError(f"product of two axes that both set {', '.join(both)}.")
      points.append(("-".join(l for l in (la, lb) if l), {**oa, **ob}))
    return Axis(tuple(points))

  def __iter__(self):
    return iter(self.points)

  def __len__(self):
    return len(self.points)


def format_label_value(value) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (tuple, list)):
    return "x".join(format_label_value(v) for v in value)
  return str(value)


def product(field: str, values: Sequence[Any], label: Optional[str] = None) -> Axis:
  """One field over `values`; each point is labelled `<label><value>` (label: a short
  name such as 'lr' for optim.learning_rate, else the field's last component)."""
  if isinstance(values, (str, bytes)) or not len(values):
    raise SweepError(f"product({field!r}, ...) needs a non-empty list of values.")
  if label is None:
    label = SHORT_LABELS.get(field, field.split(".")[-1])
  return Axis(tuple((f"{label}{format_label_value(v)}", {field: v}) for v in values))


def variants(named: Mapping[str, Mapping[str, Any]]) -> Axis:
  """Named override sets that change several fields together, e.g.
  variants({"fast": {"optim.learning_rate": 1.0, "optim.decay_steps": 100}, "slow": {...}})."""
  return Axis(tuple((label, dict(overrides)) for label, overrides in named.items()))


def members(prefix: str, config, axis: Optional[Axis] = None,
            overrides: Optional[Mapping[str, Any]] = None) -> List[Member]:
  """One member per point of `axis` (or a single one), named `<prefix>-<point label>`."""
  fixed = dict(overrides or {})
  if axis is None:
    return [Member(prefix, config, fixed)]
  out = []
  for label, point in axis:
    clash = sorted(set(point) & set(fixed))
    if clash:
      raise SweepError(f"members({prefix!r}): the axis and the fixed overrides both set "
                       f"{', '.join(clash)}.")
    name = "-".join(p for p in (prefix, label) if p)
    out.append(Member(name, config, {**fixed, **point}))
  return out


def _flatten(items) -> List[Any]:
  out = []
  for item in items:
    if isinstance(item, (list, tuple)):
      out.extend(_flatten(item))
    else:
      out.append(item)
  return out


def split_spec(spec: str) -> Tuple[str, Optional[str]]:
  """'path/file.py:arg' -> ('path/file.py', 'arg'); 'path/file.py' -> (path, None)."""
  path, sep, arg = spec.partition(".py:")
  if sep:
    return path + ".py", arg
  return spec, None


def resolve_path(path: str) -> Optional[str]:
  """A path as written in a sweep file: absolute, repo-relative, or relative to the cwd."""
  if os.path.isabs(path):
    return path if os.path.exists(path) else None
  for root in (REPO_ROOT, os.getcwd()):
    candidate = os.path.join(root, path)
    if os.path.exists(candidate):
      return os.path.abspath(candidate)
  return None


def _ensure_repo_on_path():
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def load_sweep(spec: str) -> List[Member]:
  """The members of sweep file `spec` ('file.py' or 'file.py:arg'), checked for names."""
  path, arg = split_spec(spec)
  full = resolve_path(path)
  if full is None:
    raise SweepError(f"Sweep file {path} not found (looked in {REPO_ROOT} and {os.getcwd()}).")
  _ensure_repo_on_path()
  module_name = "_sweep_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(full))[0])
  loader_spec = importlib.util.spec_from_file_location(module_name, full)
  module = importlib.util.module_from_spec(loader_spec)
  try:
    loader_spec.loader.exec_module(module)
  except SweepError:
    raise
  except Exception as e:
    raise SweepError(f"Sweep file {path} could not be loaded: {type(e).__name__}: {e}") from e
  if not hasattr(module, "get_sweep"):
    raise SweepError(f"Sweep file {path} has no get_sweep() function.")
  result = module.get_sweep() if arg is None else module.get_sweep(arg)
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


# ------------------------------------------------------------------ overrides, as on the CLI


def cli_value(value) -> str:
  """The --config.<field>=<value> text that config_flags parses back to `value`."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return str(value)


def _normalize(value):
  if isinstance(value, (list, tuple)):
    return tuple(_normalize(v) for v in value)
  return value


def _kinds_ok(value, reference) -> bool:
  """Is `value` of the kind the field holds (`reference`, the base config's value)?"""
  if isinstance(reference, bool):
    return isinstance(value, bool)
  if isinstance(reference, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(reference, float):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(reference, str):
    return isinstance(value, str)
  if isinstance(reference, tuple):
    if not isinstance(value, (tuple, list)):
      return False
    kinds = {type(x) for x in reference}
    if not kinds:
      return True
    return all(any(_kinds_ok(x, type_default(k)) for k in kinds) for x in value)
  return type(value) is type(reference)


def type_default(kind):
  return {bool: False, int: 0, float: 0.0, str: "", tuple: ()}.get(kind, kind)


def _type_name(reference) -> str:
  if isinstance(reference, tuple):
    kinds = sorted({type(x).__name__ for x in reference})
    return f"a tuple of {'/'.join(kinds)}" if kinds else "a tuple"
  return {int: "an int", bool: "a bool", float: "a float", str: "a str"}.get(
      type(reference), type(reference).__name__)


def _fields(config, prefix="") -> List[str]:
  out = []
  for key, value in config.items():
    path = f"{prefix}{key}"
    out.append(path)
    if isinstance(value, ml_collections.ConfigDict):
      out.extend(_fields(value, path + "."))
  return out


def check_override(config, field: str, value) -> Optional[str]:
  """Why `field=value` cannot be set on `config` from the command line (None: it can)."""
  node = config
  parts = field.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      close = difflib.get_close_matches(field, _fields(config), n=3, cutoff=0.6)
      hint = f" (did you mean {', '.join(close)}?)" if close else ""
      where = ".".join(parts[:i]) or "the config"
      return f"unknown field {field}: {where} has no {part!r}{hint}"
    node = node[part]
  if isinstance(node, ml_collections.ConfigDict):
    return (f"{field} is a whole section; override its fields one by one "
            f"(e.g. {field}.{next(iter(node.keys()), '<field>')})")
  if node is None:
    return f"{field} is None in the base config, so the command line cannot set it"
  if not isinstance(node, (bool, int, float, str, tuple)):
    return f"{field} holds a {type(node).__name__}, which the command line cannot set"
  if not _kinds_ok(value, node):
    return (f"wrong type: {field} holds {_type_name(node)} (base value {node!r}), "
            f"not {_type_name(_normalize(value))}")
  return None


def _get(config, field: str):
  node = config
  for part in field.split("."):
    node = node[part]
  return node


def _parse_config(base, override_args: Sequence[str]):
  """The config scripts/train.py would build from `base` and these --config.* args."""
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  argv = ["sweep"]
  if isinstance(base, str):
    config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True,
                                    sys_argv=["sweep", f"--config={base}", *override_args])
    argv.append(f"--config={base}")
  else:
    config_flags.DEFINE_config_dict("config", copy.deepcopy(base), flag_values=fv,
                                    lock_config=True, sys_argv=["sweep", *override_args])
  fv(argv + list(override_args))
  config = fv["config"].value
  config.keys()  # a config file's load error surfaces on first use
  return config


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
  _ensure_repo_on_path()
  who = f"Sweep member {member.name!r}"
  if isinstance(member.config, str):
    path, arg = split_spec(member.config)
    full = resolve_path(path)
    if full is None:
      raise SweepError(f"{who}: config file {path} not found (looked in {REPO_ROOT} and "
                       f"{os.getcwd()}).")
    suffix = "" if arg is None else f":{arg}"
    load_arg, config_arg = full + suffix, _display_path(full) + suffix
    base_source = load_arg
  elif isinstance(member.config, ml_collections.ConfigDict):
    load_arg = config_arg = None
    base_source = member.config
  else:
    raise SweepError(f"{who}: config must be a 'configs/<file>.py[:arg]' path or a "
                     f"ConfigDict, not {type(member.config).__name__}.")
  try:
    base = _parse_config(base_source, [])
  except Exception as e:
    raise SweepError(f"{who}: base config {member.config if config_arg else '<ConfigDict>'} "
                     f"could not be loaded: {type(e).__name__}: {_one_line(e)}") from e
  args = []
  for field, value in member.overrides.items():
    problem = check_override(base, field, value)
    if problem:
      raise SweepError(f"{who}: override {field}={value!r}: {problem}. Nothing was run.")
    args.append(f"--config.{field}={cli_value(value)}")
  try:
    config = _parse_config(base_source, args)
  except Exception as e:
    raise SweepError(f"{who}: overrides {args} were refused by the config flags: "
                     f"{type(e).__name__}: {_one_line(e)}. Nothing was run.") from e
  for field, value in member.overrides.items():
    got = _normalize(_get(config, field))
    if got != _normalize(value):
      raise SweepError(f"{who}: override {field}={value!r} is not expressible on the command "
                       f"line (--config.{field}={cli_value(value)} gives {got!r}). Nothing "
                       "was run.")
  return ResolvedMember(member.name, config, config_arg, load_arg, args)


def _one_line(e: BaseException) -> str:
  lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
  if not lines:
    return ""
  return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


# --------------------------------------------------------------------------- workdirs


def member_workdir(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)


def checkpoint_steps(run_dir: str) -> List[int]:
  """Steps of the finished (renamed into place) orbax checkpoints in <run_dir>/checkpoints."""
  from etils import epath
  ckpt = epath.Path(run_dir) / "checkpoints"
  if not ckpt.exists():
    return []
  return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit() and p.is_dir())


def member_status(run_dir: str, num_steps: int) -> Tuple[str, int]:
  """('finished', num_steps) | ('interrupted', last checkpoint step) | ('new', 0)."""
  steps = checkpoint_steps(run_dir)
  if num_steps in steps:
    return "finished", num_steps
  if steps:
    return "interrupted", max(steps)
  return "new", 0


def _flat(d, prefix="") -> Dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_differences(run_dir: str, config) -> List[str]:
  """Fields (other than those a resume may change) where <run_dir>/config.json differs."""
  from etils import epath
  from bn_inception.checkpoint import CONFIG_FILE, RESUMABLE_FIELDS
  path = epath.Path(run_dir) / CONFIG_FILE
  if not path.exists():
    return []
  saved = _flat(json.loads(path.read_text()))
  now = _flat(json.loads(config.to_json_best_effort()))
  return [f"{k}: {saved.get(k, '<absent>')!r} there, {now.get(k, '<absent>')!r} now"
          for k in sorted(set(saved) | set(now))
          if k not in RESUMABLE_FIELDS and saved.get(k) != now.get(k)]


def check_workdirs(workdir: str, resolved: Sequence[ResolvedMember]) -> None:
  """Refuse, before anything runs, member directories that hold a different run."""
  problems = []
  for r in resolved:
    diffs = config_differences(member_workdir(workdir, r.name), r.config)
    if diffs:
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
  if "://" in workdir or os.path.isabs(workdir):
    return workdir
  return os.path.abspath(workdir)


def write_manifest(workdir: str, spec: str, resolved: Sequence[ResolvedMember]) -> str:
  """<workdir>/sweep.json: the sweep's members in order, their configs and commands."""
  from etils import epath
  path = epath.Path(workdir) / MANIFEST
  path.parent.mkdir(parents=True, exist_ok=True)
  rows = []
  for r in resolved:
    rows.append({"name": r.name, "config": r.config_arg,
                 "overrides": r.override_args, "num_steps": r.num_steps,
                 "command": shell_line(command(r, workdir)) if r.config_arg else None})
  path.write_text(json.dumps({"sweep": spec, "members": rows}, indent=2) + "\n")
  return str(path)


# ------------------------------------------------------------------------------ running


class _Interrupt:
  """SIGTERM/SIGINT: pass it to the running member (which checkpoints), start no more."""

  def __init__(self):
    self.received: Optional[int] = None
    self.child: Optional[subprocess.Popen] = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    self.received = signum
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signum)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _run_subprocess(argv: List[str], log_path: str, interrupt: _Interrupt, out) -> Tuple[int, str]:
  """Run argv from the repo root, its output to `out` and appended to log_path."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  last_error = ""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a") as log:
    log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {shell_line(argv)}\n")
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    interrupt.child = proc
    try:
      for line in proc.stdout:
        log.write(line)
        out.write(line)
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
  except cli.USER_ERRORS + (train.NonFiniteError,) as e:
    return 2, _one_line(e)
  return (0, "") if "preempted_at_step" not in result else (0, "preempted")


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
  all_members = load_sweep(spec)
  chosen = {m.name for m in select(all_members, only)}
  all_resolved = [resolve(m) for m in all_members]   # every member checked first
  resolved = [r for r in all_resolved if r.name in chosen]
  if print_commands:
    lines = [shell_line(command(r, workdir, python)) for r in resolved]
    for line in lines:
      print(line, file=out)
    return []
  check_workdirs(workdir, resolved)
  if not inprocess:
    for r in resolved:
      command(r, workdir)  # ConfigDict members cannot run as a command: say so now
  write_manifest(workdir, spec, all_resolved)

  outcomes: List[Outcome] = []
  child_workdir = _workdir_for_children(workdir)
  with _Interrupt() as interrupt:
    for r in resolved:
      run_dir = member_workdir(workdir, r.name)
      if interrupt.received:
        outcomes.append(Outcome(r.name, "not started", member_status(run_dir, r.num_steps)[1]))
        continue
      status, step = member_status(run_dir, r.num_steps)
      if status == "finished":
        print(f"[sweep] {r.name}: finished (checkpoint at step {step}); skipped.",
              file=out, flush=True)
        outcomes.append(Outcome(r.name, "skipped", step))
        continue
      what = "starting" if status == "new" else f"resuming from step {step}"
      print(f"[sweep] {r.name}: {what} of {r.num_steps} in {run_dir}", file=out, flush=True)
      start = time.time()
      if inprocess:
        rc, error = _run_inprocess(r.config, run_dir)
      else:
        argv = command(r, child_workdir, python=sys.executable)
        rc, error = _run_subprocess(argv, os.path.join(child_workdir, r.name, LOG_FILE),
                                    interrupt, out)
      seconds = time.time() - start
      status, step = member_status(run_dir, r.num_steps)
      if status == "finished":
        outcome = Outcome(r.name, "finished", step, seconds)
      elif rc == 0:  # stopped by a signal, to it or to the sweep, at a checkpoint
        outcome = Outcome(r.name, "stopped", step, seconds)
        interrupt.received = interrupt.received or signal.SIGTERM
      else:
        outcome = Outcome(r.name, "failed", step, seconds,
                          error or f"exit status {rc}; see {run_dir}/{LOG_FILE}")
      print(f"[sweep] {r.name}: {outcome.status} at step {outcome.step} "
            f"({seconds:.0f} s){': ' + outcome.error if outcome.error else ''}",
            file=out, flush=True)
      outcomes.append(outcome)
  print(summary(outcomes), file=out, flush=True)
  return outcomes


def summary(outcomes: Sequence[Outcome]) -> str:
  lines = ["[sweep] summary:"]
  for o in outcomes:
    lines.append(f"  {o.name:<28} {o.status:<11} step {o.step:>9}"
                 + (f"  {o.seconds:7.0f} s" if o.seconds else "")
                 + (f"  {o.error}" if o.error else ""))
  return "\n".join(lines)
