"""The one training loop, for every model and dataset (as flax examples/imagenet).

create_train_state -> train_step (jax.jit on the data-parallel Mesh) -> the
evaluators of config.evals (bn_inception/evaluators) -> train_and_evaluate: resume,
step, log (clu), evaluate, checkpoint (orbax), stop cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import os
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from bn_inception import checkpoint as ckpt_lib
from bn_inception import workdir as workdir_lib
from bn_inception import workdir_config
from bn_inception import workdir_lock
from bn_inception import config_checks, evaluators, finetune
from bn_inception import metrics as metrics_lib
from bn_inception import models, optim, population, progress, sharding, step_timing
from bn_inception.batchnorm import BATCH_STATS, statistics_change_on_resume
from bn_inception.data import DataSource, create_source
from bn_inception.evaluators import classification, common
from bn_inception.models import state_variables
from bn_inception.signals import StopSignals, Stopped


class TrainState(train_state.TrainState):
  batch_stats: Any
  # Steps whose loss or gradients were non-finite (their update was not applied),
  # and the first such step (-1: none).
  nonfinite_steps: jax.Array
  first_nonfinite_step: jax.Array


class NonFiniteError(Exception):
  """The loss or the gradients became NaN/inf."""


def create_train_state(model, tx, image_shape, rng) -> TrainState:
  return train_state_of(model, tx, models.init_variables(model, image_shape, rng))


def train_state_of(model, tx, variables: dict) -> TrainState:
  """A step-0 TrainState holding `variables` (params, BN statistics), fresh optimizer."""
  return TrainState.create(
      apply_fn=model.apply, params=variables["params"], tx=tx,
      batch_stats=variables.get(BATCH_STATS, {}),
      nonfinite_steps=jnp.zeros((), jnp.int32),
      first_nonfinite_step=jnp.full((), -1, jnp.int32))


def train_step(state: TrainState, batch, *, train_inputs: Callable, schedule: Callable, base_rng):
  """One SGD step. The dropout stream is a function of (seed, step)."""
  images = train_inputs(batch)
  labels = batch["label"]
  rng = jax.random.fold_in(base_rng, state.step)

  def loss_fn(params):
    logits, mutated = state.apply_fn(
        {**state_variables(state), "params": params}, images, train=True,
        rngs={"dropout": rng}, mutable=[BATCH_STATS])
    loss = metrics_lib.cross_entropy(logits, labels).mean()
    return loss, (logits, mutated.get(BATCH_STATS, {}))

  (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updated = state.apply_gradients(grads=grads, batch_stats=new_stats)
  # A non-finite step changes nothing but the step counter and the tally, so a
  # NaN never reaches the parameters or a checkpoint.
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                           updated, state.replace(step=updated.step))
  new_state = new_state.replace(
      nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
      first_nonfinite_step=jnp.where(
          (state.first_nonfinite_step < 0) & ~finite, state.step, state.first_nonfinite_step))
  metrics = metrics_lib.TrainMetrics.single_from_model_output(
      loss=loss, accuracy=metrics_lib.topk_correct(logits, labels, 1).mean(),
      grad_norm=grad_norm, learning_rate=schedule(state.step))
  return new_state, metrics


def dropout_rng(seed: int):
  """The base of the dropout stream (folded with the step in `train_step`)."""
  return jax.random.fold_in(jax.random.key(seed), 1)


class Trainer:
  """Compiled steps for one (config, mesh, data source)."""

  def __init__(self, config, mesh=None, source: Optional[DataSource] = None):
    self.config = config
    self.mesh = mesh or sharding.create_mesh()
    self.source = source or create_source(config.data)
    sharding.check_batch(config.train.batch_size, self.mesh)
    sharding.check_batch(config.train.eval_batch_size, self.mesh, "train.eval_batch_size")
    group = sharding.bn_group_size(config.bn, config.train.batch_size, self.mesh)
    models.check_fits_data(config.model, self.source)
    self.model = models.create_model(config, bn_group_size=group)
    self.tx, self.schedule = optim.create_optimizer(
        config.optim, config.train.num_steps,
        steps_per_epoch=self.source.num_train_examples / config.train.batch_size,
        decay_exempt=models.weight_decay_exempt(config))
    self.base_rng = dropout_rng(config.seed)

    repl, data = sharding.replicated(self.mesh), sharding.batch_sharding(self.mesh)
    init_rng = jax.random.fold_in(jax.random.key(config.seed), 0)
    abstract = jax.eval_shape(
        lambda: create_train_state(self.model, self.tx, self.source.image_shape, init_rng))
    self.state_sharding = jax.tree.map(lambda _: repl, abstract)
    # The restore target carries this mesh's sharding: orbax then restores a
    # checkpoint written on any device count (it refuses a topology mismatch otherwise).
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
        self.state_sharding)
    self._init = jax.jit(
        lambda: create_train_state(self.model, self.tx, self.source.image_shape, init_rng),
        out_shardings=self.state_sharding)
    self.train_step = jax.jit(
        functools.partial(train_step, train_inputs=self.source.train_inputs,
                          schedule=self.schedule, base_rng=self.base_rng),
        in_shardings=(self.state_sharding, data), out_shardings=(self.state_sharding, repl),
        donate_argnums=0)
    network = common.Network(self.model.apply, self.source.normalize,
                             tuple(self.source.image_shape))
    self.eval_context = common.LoopContext(network, self._eval_batches, self.mesh)
    self.evaluators = evaluators.create_all(config.evals, self.eval_context)
    self._eval_step = None

  def init_state(self) -> TrainState:
    return self._init()

  def train_batches(self, start_step: int):
    """Global batches from `start_step` on, transferred ahead of the step that needs them."""
    local = self.source.train_batches(start_step, self.config.train.batch_size,
                                      self.config.seed, jax.process_index(), jax.process_count())
    return sharding.device_batches(local, self.mesh)

  def _eval_batches(self):
    """The eval split, every example once: process-local batches, the last one padded."""
    return self.source.eval_batches(self.config.train.eval_batch_size, jax.process_index(),
                                    jax.process_count())

  def evaluate(self, state: TrainState) -> Dict[str, float]:
    """Every evaluator of config.evals on `state`, as eval/<metric>."""
    return evaluators.run_all(self.evaluators, state_variables(state))

  def eval_step(self, state: TrainState, batch):
    """The classification metrics of one global eval batch (benchmark.py times it)."""
    if self._eval_step is None:
      self._eval_step = classification.create(None, self.eval_context).step
    return self._eval_step(state_variables(state), batch)

  def population_statistics(self, state: TrainState, num_batches: int,
                            start_step: int = 0) -> TrainState:
    """Replace the moving averages with exact averages over `num_batches` training
    batches from `start_step` on (Alg. 2, step 10)."""
    variables = population.population_statistics_of(
        self.model.apply, self.source, self.config, state_variables(state), self.mesh,
        num_batches, self.base_rng, start_step)
    return state.replace(batch_stats=variables[BATCH_STATS])


def _check_finite(state: TrainState, policy: str):
  bad = int(state.nonfinite_steps)
  if bad and policy == "stop":
    raise NonFiniteError(
        f"Non-finite loss or gradients at step {int(state.first_nonfinite_step)}; training "
        f"stopped. Its update was not applied and no checkpoint after it was written. Rerun "
        f"with --config.train.nonfinite_policy=skip to skip such steps and resume from the "
        f"last checkpoint, or lower config.optim.learning_rate in a new --workdir.")
  return bad


# Multi-process runs agree every this many steps on whether a stop was requested
# (one tiny all-gather; it waits for the steps in flight): every process then saves
# the same step and leaves together. A single process reads its own flag each step.
STOP_SYNC_EVERY = 5


def stop_agreed(stop: StopSignals, step: int) -> bool:
  """Whether every process stops after `step`: some process received a stop signal
  (known to all at the same step; in a single process, at once)."""
  mine = stop.received is not None
  if jax.process_count() == 1:
    return mine
  if step % STOP_SYNC_EVERY:
    return False
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.int32(mine))))


def train_and_evaluate(config, workdir: str, source: Optional[DataSource] = None,
                       mesh=None) -> Dict[str, float]:
  """Train `config` in `workdir`, resuming from its newest checkpoint; return last eval.

  `mesh` defaults to every device of every process; a checkpoint resumes on any
  device count (state is replicated and restored straight onto this mesh).

  Nothing is written before the config, the data (its first training batch
  decoded), the model and any checkpoint have been checked. A launch into a new
  workdir that fails or is stopped before its first checkpoint removes what it
  created there (`workdir.remove_launch_leftovers`). A stop signal during
  start-up raises `signals.Stopped` (after that clean-up); in the loop it saves.
  """
  workdir_lib.check_workdir(workdir)  # before seconds of data loading
  config_checks.validate(config)
  existed = os.path.exists(workdir)
  # Start-up: a stop signal is acted on at the safe points `check()` (signals.py).
  with StopSignals(start_up="check") as stop:
    try:
      def check():  # a process of many must not leave alone: they agree at step 0
        if jax.process_count() == 1:  # (so: only once jax.distributed is set up)
          stop.check()
      if sharding.maybe_initialize_distributed(config):  # before JAX touches a device
        stop.reinstall()  # jax.distributed's preemption notifier took SIGTERM
      check()
      workdir_config.check_or_save_config(workdir, config, save=False)
      trainer = Trainer(config, mesh=mesh, source=source)  # validates config, finds the data
      check()
      tc = config.train
      ckpt_lib.check_resume(workdir, trainer.abstract_state, tc.num_steps)  # before writing
      # One trainer per workdir; its full log lines go to <workdir>/log.txt.
      with workdir_lock.workdir_lock(workdir), progress.log_file(workdir, jax.process_index()):
        checkpointer = ckpt_lib.Checkpointer(workdir, tc.checkpoint_every,
                                            tc.keep_checkpoints, owner=True)
        try:  # on any error, still finish (commit) a checkpoint already being written
          return _train_loop(config, workdir, trainer, checkpointer, stop, check)
        finally:
          checkpointer.close()
    except BaseException:
      if not existed:
        workdir_lib.remove_launch_leftovers(workdir)
      raise


@dataclasses.dataclass
class _Carried:
  """What a checkpoint's record carries across a resume: the partial train/* averages
  since the last train/* row (so the first row after a resume equals the uninterrupted
  run's), and an evaluation due at that step that a stop skipped (done first)."""
  train_metrics: Any = None
  eval_pending: bool = False

  @classmethod
  def of(cls, record: dict) -> "_Carried":
    # Checkpoints written before these records existed have neither.
    saved = record.get("train_metrics")
    return cls(None if saved is None else
               metrics_lib.collection_from_json(metrics_lib.TrainMetrics, saved),
               bool(record.get("eval_pending", False)))


def _record(config, trainer: Trainer, state: TrainState, train_metrics,
            eval_pending: bool = False) -> dict:
  """The checkpoint's record of the run at `state` (checkpoint.record)."""
  return ckpt_lib.record(
      step=int(state.step), seed=config.seed, batch_size=config.train.batch_size,
      nonfinite_steps=int(state.nonfinite_steps), num_devices=trainer.mesh.size,
      train_metrics=None if train_metrics is None
      else metrics_lib.collection_to_json(train_metrics),
      eval_pending=eval_pending)


def _restore_or_create(config, workdir, trainer: Trainer,
                       checkpointer) -> Tuple[TrainState, _Carried]:
  """The newest checkpoint's state, else a fresh one (fine-tuned from
  train.init_from when set: a resume takes precedence)."""
  tc = config.train
  restored = checkpointer.restore(trainer.abstract_state)
  if restored is None:
    state = trainer.init_state()
    if tc.init_from:
      return finetune.init_from(trainer, state, tc.init_from), _Carried()
    logging.info("Starting %s from scratch in %s.", config.model.name, workdir)
    return state, _Carried()
  state, meta = restored
  state = jax.device_put(state, trainer.state_sharding)
  logging.info("Resumed from step %d in %s (%s examples seen).", int(state.step),
               workdir, meta.get("examples_seen"))
  change = statistics_change_on_resume(config.bn.stats_mode, tc.batch_size,
                                       meta.get("num_devices", trainer.mesh.size),
                                       trainer.mesh.size)
  if change:
    logging.warning(change)
  return state, _Carried.of(meta)


def _open_writers(config, workdir, state: TrainState, start: int):
  """clu's writers (TensorBoard, log, metrics.jsonl) and the progress report (steps/s
  to the writers, one console line per log step)."""
  tc = config.train
  writer = metrics_lib.create_writer(workdir)
  if start == 0 and jax.process_index() == 0:
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    writer.write_hparams({"num_params": n_params})
  return progress.TrainProgress(
      writer, name=os.path.basename(os.path.normpath(workdir)), num_steps=tc.num_steps,
      batch_size=tc.batch_size, log_every=tc.log_every, eval_every=tc.eval_every,
      start_step=start, show=jax.process_index() == 0)


def _evaluate(trainer: Trainer, state: TrainState, writer, step: int) -> Dict[str, float]:
  results = trainer.evaluate(state)
  writer.write_scalars(step, results)
  return results


def _write_train_metrics(writer, step: int, train_metrics, state: TrainState, policy: str,
                         clock: step_timing.InputClock):
  """The interval's train/* averages, and its input wait (timed once they are fetched)."""
  skipped = _check_finite(state, policy)
  scalars = {f"train/{k}": v for k, v in train_metrics.compute().items()}
  scalars["train/nonfinite_steps"] = skipped
  writer.write_scalars(step, {**scalars, **clock.interval()})


def _close(checkpointer, report) -> None:
  checkpointer.wait()
  report.writer.flush()
  report.close()


def _train_loop(config, workdir, trainer, checkpointer, stop, check) -> Dict[str, float]:
  tc = config.train
  state, carried = _restore_or_create(config, workdir, trainer, checkpointer)
  check()
  start = int(state.step)
  batches = trainer.train_batches(start)
  if start < tc.num_steps:  # decode the first batch before anything is written
    batches = itertools.chain([next(batches)], batches)
  # End of start-up: from here a stop is a checkpoint at the next agreed step.
  stop.start_up = None
  if stop_agreed(stop, 0):
    raise Stopped(stop.received)
  workdir_config.check_or_save_config(workdir, config)  # only once data and checkpoint fit
  report = _open_writers(config, workdir, state, start)
  writer, train_metrics, last_eval = report.writer, carried.train_metrics, {}
  if (start == 0 and tc.eval_at_start and tc.eval_every > 0) or carried.eval_pending:
    last_eval = _evaluate(trainer, state, writer, start)

  clock = step_timing.InputClock(batches)  # each step's wait for its batch
  with step_timing.StepProfiler(tc.profile_steps, workdir) as profiler:
    for step in range(start + 1, tc.num_steps + 1):
      profiler.before(step)
      state, m = trainer.train_step(state, clock.next())
      profiler.after(step, state)
      train_metrics = m if train_metrics is None else train_metrics.merge(m)
      report(step)
      if step % tc.log_every == 0 or step == tc.num_steps:
        _write_train_metrics(writer, step, train_metrics, state, tc.nonfinite_policy, clock)
        train_metrics = None
      stopping = stop_agreed(stop, step)  # once per step: a signal may land mid-save
      # A preemption saves first: a due full evaluation is left to the resumed run.
      eval_due = tc.eval_every > 0 and (step % tc.eval_every == 0 or step == tc.num_steps)
      with clock.paused():  # not step time
        if eval_due and not stopping:
          last_eval = _evaluate(trainer, state, writer, step)
        if step % tc.checkpoint_every == 0 or step == tc.num_steps or stopping:
          _check_finite(state, tc.nonfinite_policy)
          record = _record(config, trainer, state, train_metrics, eval_due and stopping)
          checkpointer.save(step, state, record, force=True)
      if stopping:
        _close(checkpointer, report)
        logging.warning("preempted at step %d; rerun the same command to resume", step)
        return {**last_eval, "preempted_at_step": step}
  _close(checkpointer, report)
  skipped = int(state.nonfinite_steps)
  if skipped:  # only under policy 'skip'
    logging.warning("%d training step(s) had a non-finite loss or gradients and were skipped "
                    "(first: step %d).", skipped, int(state.first_nonfinite_step))
    last_eval = {**last_eval, "train/nonfinite_steps": skipped}
  return last_eval
