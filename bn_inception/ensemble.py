"""Ensembles of training workdirs (Sec. 4.2.3, Figure 4): load members, evaluate them.

Each member is a training workdir (`dir` or `dir@STEP`): its config.json rebuilds
the model and data source and its checkpoint (newest usable, or the step asked
for) gives the variables, read through `checkpoint.Checkpointer` like every
restore. The numeric core (crops -> probabilities -> averages -> top-k) is the
multicrop evaluator (bn_inception/evaluators/multicrop.py), which sees each member
only as a predict_fn; the report's tables and files are bn_inception/eval_report.py.

Members must share the architecture (`model.name`), the class count and the
input resolution (crops are shared); they may differ in anything else (init
scale, dropout, per-activation BN, ... as the paper's six members do) and each
normalises its inputs with its own data.mean/std. The examples come from the
FIRST member's data section (after --override).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import jax
import ml_collections

from bn_inception import checkpoint as ckpt_lib
from bn_inception import workdir as workdir_lib
from bn_inception import workdir_config
from bn_inception import config_checks, eval_report
from bn_inception import overrides as overrides_lib
from bn_inception import population, progress, sharding
from bn_inception.batchnorm import BATCH_STATS
from bn_inception.workdir import CheckpointError
from bn_inception.data import multicrop
from bn_inception.evaluators import common
from bn_inception.evaluators import multicrop as multicrop_eval


@dataclasses.dataclass(frozen=True)
class MemberSpec:
  workdir: str
  step: Optional[int] = None   # None: the newest usable checkpoint


@dataclasses.dataclass
class Member:
  """One restored network: `predict` maps global uint8 crops to softmax probabilities."""
  name: str
  workdir: str
  step: int
  config: ml_collections.ConfigDict
  num_classes: int
  image_shape: Tuple[int, int, int]
  predict: Callable[[jax.Array], jax.Array]
  source: object = None
  population_stats_batches: int = 0
  bn_statistics: str = "moving"  # population.BN_STATISTICS


def parse_member(text: str, base_dir: str = "", step: Optional[int] = None) -> MemberSpec:
  """'workdir' or 'workdir@STEP'; a relative workdir is taken relative to base_dir."""
  text, at_step = workdir_lib.split_step(text)
  step = step if at_step is None else at_step
  if not text:
    raise ValueError("An ensemble member has an empty workdir.")
  return MemberSpec(os.path.normpath(os.path.join(base_dir, os.path.expanduser(text))), step)


def expand_workdirs(entries: Sequence[str]) -> List[str]:
  """Shell patterns (e.g. 'runs/ensemble/x30_*') -> the matching run folders, sorted."""
  import glob
  out = []
  for entry in entries:
    if any(ch in entry for ch in "*?["):
      head, sep, tail = entry.rpartition("@")
      pattern, step = (head, sep + tail) if sep and tail.isdigit() else (entry, "")
      found = sorted(d for d in glob.glob(os.path.expanduser(pattern))
                     if workdir_lib.is_workdir(d))
      if not found:
        raise FileNotFoundError(f"The workdir pattern {pattern!r} matches no training workdir "
                                "(a folder with config.json).")
      out += [d + step for d in found]
    else:
      out.append(entry)
  return out


def read_ensemble_file(path: str, step: Optional[int] = None) -> List[MemberSpec]:
  """One member per line: `workdir` or `workdir@STEP`; `#` starts a comment; relative
  paths are relative to the file's folder."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Ensemble file {path} does not exist.")
  base = os.path.dirname(os.path.abspath(path))
  specs = []
  with open(path) as f:
    for line in f:
      line = line.split("#", 1)[0].strip()
      if line:
        specs.append(parse_member(line, base, step))
  if not specs:
    raise ValueError(f"Ensemble file {path} lists no workdirs (one per line).")
  return specs


def member_names(specs: Sequence[MemberSpec]) -> List[str]:
  """Short unique names: the workdir's last folder (+ @step), numbered when repeated."""
  names = [os.path.basename(s.workdir.rstrip(os.sep)) + (f"@{s.step}" if s.step is not None
                                                         else "") for s in specs]
  seen: Dict[str, int] = {}
  out = []
  for n in names:
    seen[n] = seen.get(n, 0) + 1
    out.append(n if names.count(n) == 1 else f"{n}#{seen[n]}")
  return out


def load_member(spec: MemberSpec, name: str, mesh, overrides: Sequence[str] = (),
                population_stats_batches: int = 0, bn_statistics: str = "") -> Member:
  """A workdir's network for inference: its config.json rebuilds the model and the
  data source, its checkpoint (newest usable, or spec.step) gives the variables
  (verified like every restore: checkpoint.Checkpointer), and a jitted predict_fn
  maps global uint8 crops to probabilities. No optimizer or training step is built.
  `bn_statistics` (population.BN_STATISTICS) says what BN normalises by."""
  from bn_inception import models
  from bn_inception.data import create_source
  who = f"Member {name} ({spec.workdir})"
  bn_statistics = population.resolve_bn_statistics(bn_statistics, population_stats_batches)
  config = _for_bn_statistics(member_config(spec, overrides), bn_statistics, who)
  if not workdir_lib.finished_steps(spec.workdir):
    raise CheckpointError(f"Member {name}: {spec.workdir} has no checkpoint (no step folders "
                          f"in {os.path.join(spec.workdir, workdir_lib.CHECKPOINT_DIR)}); train "
                          "it first or remove it from the ensemble.")
  source = create_source(config.data)
  try:
    models.check_fits_data(config.model, source)
    # Only training-mode BN (the population statistics) groups the batch.
    group = (sharding.bn_group_size(config.bn, config.train.batch_size, mesh)
             if population_stats_batches else None)
  except ValueError as e:
    hint = (" (make the member's train.batch_size a multiple of the device count for the "
            "population statistics)" if population_stats_batches else "")
    raise ValueError(f"{who}: {e}{hint}") from e
  model = models.create_model(config, bn_group_size=group)
  abstract = jax.eval_shape(lambda: models.init_variables(model, source.image_shape,
                                                          jax.random.key(0)))
  checkpointer = ckpt_lib.Checkpointer(spec.workdir)
  try:
    variables, step = checkpointer.restore_variables(abstract, sharding.replicated(mesh),
                                                     spec.step)
  except CheckpointError as e:
    raise CheckpointError(f"Member {name}: {e}") from e
  finally:
    checkpointer.close()
  used_batches = 0
  if population_stats_batches:
    if BATCH_STATS in variables:  # Alg. 2, step 10: exact averages over training batches
      from bn_inception import train
      variables = population.population_statistics_of(
          model.apply, source, config, variables, mesh, population_stats_batches,
          train.dropout_rng(config.seed), label=f"population statistics {name}")
      used_batches = population_stats_batches
    else:
      logging.warning("member %s has no BN layers: no population statistics to compute", name)
  network = common.Network(model.apply, source.normalize, tuple(source.image_shape))
  predict = jax.jit((common.batch_statistics_fn if bn_statistics == "batch" else
                     common.probabilities_fn)(network),
                    in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
                    out_shardings=sharding.batch_sharding(mesh))
  return Member(name=name, workdir=spec.workdir, step=step, config=config,
                num_classes=source.num_classes, image_shape=tuple(source.image_shape),
                predict=functools.partial(predict, variables), source=source,
                population_stats_batches=used_batches, bn_statistics=bn_statistics)


def _for_bn_statistics(config, bn_statistics: str, who: str):
  """The member's config as `bn_statistics` needs it: population_biased computes the
  moments without Alg. 2's m/(m-1); batch (training-mode BN) refuses a model whose
  dropout training mode would also apply."""
  if bn_statistics == "population_biased":
    with config.unlocked():
      config.bn.unbiased_variance = False
  if bn_statistics == "batch" and "dropout_rate" in config.model and config.model.dropout_rate:
    raise ValueError(f"{who}: bn_statistics=batch runs BN in training mode, which would "
                     f"also apply its dropout (model.dropout_rate="
                     f"{config.model.dropout_rate}); evaluate it with population statistics.")
  return config


def check_compatible(members: Sequence[Member]):
  """Refuse an ensemble whose members cannot be averaged crop by crop."""
  if not members:
    raise ValueError("No ensemble members.")
  first = members[0]
  for m in members[1:]:
    checks = (("architecture (config.model.name)", m.config.model.name, first.config.model.name),
              ("number of classes", m.num_classes, first.num_classes),
              ("input shape (config.data.image_size, channels)", m.image_shape,
               first.image_shape))
    for what, theirs, ours in checks:
      if theirs != ours:
        raise ValueError(f"Ensemble member {m.name} ({m.workdir}) has {what} {theirs!r}, but "
                         f"member {first.name} has {ours!r}; members must share it.")



# --------------------------------------------------------------------------- the command


def run(specs: Sequence[MemberSpec], crops: Sequence[int], split: str = "eval",
        output_dir: str = "", batch_size: int = 256, population_stats_batches: int = 0,
        overrides: Sequence[str] = (), command: str = "", mesh=None, paper: bool = False,
        on_result: Optional[Callable[[dict], None]] = None, bn_statistics: str = "") -> dict:
  """Load the members and evaluate each crop scheme (`on_result(result)` as each
  finishes); write <output_dir>/report.json, report.md and correct.npz (each row's
  top-1 correctness per example: `eval_report.read_per_example`) when given; return
  the report."""
  if not specs:
    raise ValueError("No ensemble members.")
  bn_statistics = population.resolve_bn_statistics(bn_statistics, population_stats_batches)
  if mesh is None:  # multi-host evaluation starts like training (config.distributed)
    sharding.maybe_initialize_distributed(workdir_config.read_config(specs[0].workdir))
    mesh = sharding.create_mesh()
  multicrop_eval.check_request(crops, batch_size, mesh)  # before restoring anything
  split, overrides = _split_override(specs, split, overrides)
  members = load_members(specs, mesh, overrides, population_stats_batches, bn_statistics)
  first = members[0]
  context = multicrop_eval.Context(
      {m.name: m.predict for m in members}, multicrop.image_set(first.source, split),
      multicrop_eval.Geometry.of(first.config.data, first.image_shape), first.num_classes,
      mesh, pad_with_examples=bn_statistics == "batch")
  results = []
  evaluator = multicrop_eval.Evaluator(context, crops, batch_size)
  for result in evaluator.run():
    results.append(result)
    if on_result is not None:
      on_result(result)
  report = _report(members, results, context, split, batch_size, command, paper)
  if output_dir and jax.process_index() == 0:
    eval_report.write_report(output_dir, report)
    eval_report.write_per_example(output_dir, evaluator.per_example)
  return report


def _split_override(specs: Sequence[MemberSpec], split: str, overrides: Sequence[str]):
  """A named TFDS split (e.g. 'validation') becomes the members' eval split."""
  overrides = list(overrides)
  if split in ("eval", "train"):
    return split, overrides
  from bn_inception.data.factory import NAMED_SPLITS
  first = workdir_config.read_config(specs[0].workdir)
  if first.data.name not in NAMED_SPLITS:
    raise ValueError(f"split={split!r}: use 'eval' or 'train' ({split!r} names a split "
                     f"only for data.name in {NAMED_SPLITS}).")
  return "eval", overrides + [f"data.eval_split={split}"]


def member_config(spec: MemberSpec, overrides: Sequence[str] = ()):
  """A member's config.json with the evaluation's overrides (data and train only)."""
  return overrides_lib.apply_text(workdir_config.read_config(spec.workdir), overrides,
                                  sections=("data", "train"), flag="--override=")


def load_members(specs: Sequence[MemberSpec], mesh, overrides: Sequence[str],
                 population_stats_batches: int, bn_statistics: str = "") -> List[Member]:
  """Every member restored, after checking every member's config (config_checks, as
  for training) and that their architectures agree."""
  names = member_names(specs)
  configs = [member_config(s, overrides) for s in specs]
  for name, spec, config in zip(names, specs, configs):
    try:
      config_checks.validate(config)
    except config_checks.ConfigError as e:
      raise config_checks.ConfigError(f"Member {name} ({spec.workdir}): {e}") from e
  architectures = [c.model.name for c in configs]
  for name, spec, arch in zip(names, specs, architectures):
    if arch != architectures[0]:  # before restoring anything
      raise ValueError(f"Ensemble member {name} ({spec.workdir}) has architecture "
                       f"(config.model.name) {arch!r}, but member {names[0]} has "
                       f"{architectures[0]!r}; members must share it.")
  members = []
  for spec, name in zip(specs, names):
    members.append(load_member(spec, name, mesh, overrides, population_stats_batches,
                               bn_statistics))
    check_compatible(members)
    progress.emit(f"loaded {name}: {spec.workdir} step {members[-1].step}")
    if members[-1].step < members[-1].config.train.num_steps:
      logging.warning("member %s is at step %d of its run's %d: the run is unfinished (still "
                      "training, or stopped); this evaluates that checkpoint", name,
                      members[-1].step, members[-1].config.train.num_steps)
  return members


def _report(members: Sequence[Member], results: List[dict], context, split: str,
            batch_size: int, command: str, paper: bool) -> dict:
  report = {
      "command": command, "split": split, "data": context.images.name,
      "num_examples": context.images.num_examples, "devices": context.mesh.size,
      "batch_size": batch_size, "geometry": dataclasses.asdict(context.geometry),
      "members": [{"name": m.name, "workdir": os.path.abspath(m.workdir), "step": m.step,
                   "model": m.config.model.name, "num_classes": m.num_classes,
                   "image_size": m.image_shape[0],
                   "population_stats_batches": m.population_stats_batches,
                   "bn_statistics": m.bn_statistics,
                   "run_num_steps": m.config.train.num_steps}
                  for m in members],
      "results": results}
  if paper:  # the paper's Figure 4 beside ours
    report["paper"] = eval_report.paper_rows()
  return report
