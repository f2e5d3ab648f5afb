"""TensorBoard's HParams dashboard for a sweep (`tensorboard --logdir=<workdir>`):
<workdir>/_hparams/<member>, each member's overridden (and differing) config fields
as hparams and its final and maximum accuracy as metrics."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Dict, List, Tuple

from bn_inception import workdir as workdir_lib
from bn_inception.report_runs import (METRIC, member_configs, member_dirs, summarize,
                                      varying_fields)

HPARAMS_DIR = "_hparams"  # not a member name: those start with a letter or digit
FINAL_TAG, MAX_TAG = "accuracy/final", "accuracy/max"


def _hparam_value(value: Any):
  """A config value as TensorBoard's hparams take it: bool, number or string."""
  if isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value)
  return str(value)


def sweep_hparams(workdir: str) -> Dict[str, Dict[str, Any]]:
  """{member: {hparam: value}}: the base config (sweep.json) and every field a member
  overrides (sweep.json) or that differs between members, valued as each member's
  config.json stores it. Members not started yet (no config.json) are left out."""
  declared = {m["name"]: m for m in workdir_lib.sweep_members(workdir)}
  configs = {name: c for name, c in member_configs(member_dirs(workdir)).items() if c}
  fields = set(varying_fields(configs))
  for name, m in declared.items():
    fields |= {arg.split("=", 1)[0][len("--config."):] for arg in m.get("overrides", [])}
  out = {}
  for name, config in configs.items():
    hparams = {f: _hparam_value(config[f]) for f in sorted(fields) if f in config}
    if declared.get(name, {}).get("config"):
      hparams["config"] = declared[name]["config"]
    out[name] = hparams
  return out


def write_hparams(workdir: str, metric: str = METRIC) -> List[str]:
  """TensorBoard's HParams dashboard for the sweep in `workdir`: one run per started
  member, <workdir>/_hparams/<member>, holding its hparams (`sweep_hparams`) and its
  final and maximum `metric` as the scalars accuracy/final and accuracy/max, and the
  experiment (which hparams and metrics to show) in <workdir>/_hparams. Rewritten
  from scratch each time; returns the member runs written."""
  from tensorboard.compat.proto import event_pb2
  from tensorboard.plugins.hparams import summary_v2 as hp
  from tensorboard.plugins.scalar import summary_v2 as scalar
  from tensorboard.summary.writer.event_file_writer import EventFileWriter
  members = sweep_hparams(workdir)
  root = os.path.join(workdir, HPARAMS_DIR)
  shutil.rmtree(root, ignore_errors=True)  # TensorBoard keeps the FIRST hparams of a run
  if not members:
    return []

  def write(logdir: str, summaries: List[Tuple[int, Any]]):
    writer = EventFileWriter(logdir)
    for step, summary in summaries:
      writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    writer.close()

  names = sorted({k for h in members.values() for k in h})
  write(root, [(0, hp.hparams_config_pb(
      hparams=[hp.HParam(n) for n in names],
      metrics=[hp.Metric(FINAL_TAG, display_name=f"final {metric}"),
               hp.Metric(MAX_TAG, display_name=f"max {metric}")]))])
  written = []
  for name, hparams in members.items():
    s = summarize(name, workdir_lib.read_metrics(os.path.join(workdir, name)), 1.0, metric)
    summaries = [(0, hp.hparams_pb(hparams, trial_id=name))]
    if s.final_accuracy is not None:
      summaries += [(s.final_step, scalar.scalar_pb(FINAL_TAG, s.final_accuracy)),
                    (s.max_step, scalar.scalar_pb(MAX_TAG, s.max_accuracy))]
    write(os.path.join(root, name), summaries)
    written.append(os.path.join(root, name))
  return written
