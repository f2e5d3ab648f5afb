"""The one training loop, for every model and dataset.

create_train_state -> train_step / eval_step (jax.jit on the data-parallel Mesh)
-> train_and_evaluate: resume, step, log (clu), evaluate the whole eval split,
checkpoint (orbax), stop cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from bn_inception import checkpoint as ckpt_lib
from bn_inception import config_checks
from bn_inception import metrics as metrics_lib
from bn_inception import models, optim, progress, sharding
from bn_inception.batchnorm import BATCH_MOMENTS, BATCH_STATS, population_statistics
from bn_inception.data import DataSource, create_source
from bn_inception.models import RECORDED, state_variables
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


def eval_step(state: TrainState, batch, *, normalize: Callable):
  """Masked metrics over one padded batch, plus whatever the model records."""
  logits, mutated = state.apply_fn(state_variables(state), normalize(batch["image"]),
                                   train=False, mutable=[RECORDED])
  outputs = metrics_lib.eval_outputs(logits, batch["label"])
  metrics = metrics_lib.EvalMetrics.single_from_model_output(mask=batch["mask"], **outputs)
  return metrics, mutated.get(RECORDED, {})


def moments_step(variables, batch, *, apply_fn: Callable, train_inputs: Callable, base_rng):
  """Training-mode batch moments of every BN layer (for Alg. 2, step 10), on
  training inputs prepared exactly as in `train_step`."""
  _, mutated = apply_fn(variables, train_inputs(batch), train=True,
                        rngs={"dropout": base_rng}, mutable=[BATCH_STATS, BATCH_MOMENTS])
  return mutated[BATCH_MOMENTS]


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
    self.eval_step = jax.jit(
        functools.partial(eval_step, normalize=self.source.normalize),
        in_shardings=(self.state_sharding, data))
    self.moments_step = jax.jit(
        functools.partial(moments_step, apply_fn=self.model.apply,
                          train_inputs=self.source.train_inputs, base_rng=self.base_rng),
        in_shardings=(repl, data))

  def init_state(self) -> TrainState:
    return self._init()

  def train_batches(self, start_step: int):
    """Global batches from `start_step` on, transferred ahead of the step that needs them."""
    local = self.source.train_batches(start_step, self.config.train.batch_size,
                                      self.config.seed, jax.process_index(), jax.process_count())
    return sharding.device_batches(local, self.mesh)

  def evaluate(self, state: TrainState) -> Dict[str, float]:
    """Metrics over EVERY eval example exactly once (padded, masked last batch).

    Per-example values the model records (models.RECORDED) are summarised by the
    percentiles in `config.model.record_percentiles`, as eval/<collection>/<name>/p<q>.
    """
    total, recorded, masks = None, [], []
    for local in self.source.eval_batches(self.config.train.eval_batch_size,
                                          jax.process_index(), jax.process_count()):
      batch = sharding.global_batch(local, self.mesh)
      m, r = self.eval_step(state, batch)
      total = m if total is None else total.merge(m)
      if r:
        recorded.append(r)
        masks.append(batch["mask"])
    out = {f"eval/{k}": float(v) for k, v in total.compute().items()}
    out["eval/num_examples"] = int(total.accuracy.count)
    if recorded:
      quantiles = tuple(self.config.model.record_percentiles)
      mask = _to_host(masks)
      for name in recorded[0]:
        values = _to_host([r[name] for r in recorded])[mask]
        for q, v in zip(quantiles, np.percentile(values, quantiles)):
          out[f"eval/{RECORDED}/{name}/p{q}"] = float(v)
    return out

  def population_statistics(self, state: TrainState, num_batches: int,
                            start_step: int = 0) -> TrainState:
    """Replace the moving averages with exact averages over `num_batches` training batches."""
    batches = (b for _, b in zip(range(num_batches), self.train_batches(start_step)))
    variables, _ = population_statistics(self.moments_step, state_variables(state), batches)
    return state.replace(batch_stats=variables[BATCH_STATS])


def _to_host(arrays):
  from jax.experimental import multihost_utils
  if jax.process_count() > 1:
    arrays = [multihost_utils.process_allgather(a, tiled=True) for a in arrays]
  return np.concatenate([np.asarray(a) for a in arrays])


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
  created there (`checkpoint.remove_launch_leftovers`). A stop signal during
  start-up raises `signals.Stopped` (after that clean-up); in the loop it saves.
  """
  ckpt_lib.check_workdir(workdir)  # before seconds of data loading
  config_checks.validate(config)
  existed = os.path.exists(workdir)
  with StopSignals(interrupt=True) as stop:
    try:
      if sharding.maybe_initialize_distributed(config):  # before JAX touches a device
        stop.reinstall()  # jax.distributed's preemption notifier took SIGTERM
      # A process of many must not leave alone: it agrees with the others first.
      stop.interrupt = jax.process_count() == 1
      stop.check()
      ckpt_lib.check_or_save_config(workdir, config, save=False)
      trainer = Trainer(config, mesh=mesh, source=source)  # validates config, finds the data
      tc = config.train
      ckpt_lib.check_resume(workdir, trainer.abstract_state, tc.num_steps)  # before writing
      # One trainer per workdir; its full log lines go to <workdir>/log.txt.
      with ckpt_lib.workdir_lock(workdir), progress.log_file(workdir, jax.process_index()):
        checkpointer = ckpt_lib.Checkpointer(workdir, tc.checkpoint_every,
                                            tc.keep_checkpoints, owner=True)
        try:  # on any error, still finish (commit) a checkpoint already being written
          return _train_loop(config, workdir, trainer, checkpointer, stop)
        finally:
          checkpointer.close()
    except BaseException:
      if not existed:
        ckpt_lib.remove_launch_leftovers(workdir)
      raise


def _metrics_meta(train_metrics) -> Optional[dict]:
  return None if train_metrics is None else metrics_lib.collection_to_json(train_metrics)


def _train_loop(config, workdir, trainer, checkpointer, stop) -> Dict[str, float]:
  tc = config.train
  policy = tc.nonfinite_policy
  restored = checkpointer.restore(trainer.abstract_state)
  train_metrics, eval_pending = None, False
  if restored is None:
    state = trainer.init_state()
    if tc.get("init_from"):  # fine-tuning; a resume (above) takes precedence
      state = init_from(trainer, state, tc.init_from)
    else:
      logging.info("Starting %s from scratch in %s.", config.model.name, workdir)
  else:
    state, meta = restored
    state = jax.device_put(state, trainer.state_sharding)
    logging.info("Resumed from step %d in %s (%s examples seen).", int(state.step),
                 workdir, meta.get("examples_seen"))
    # Checkpoints written before these records existed have neither.
    if meta.get("train_metrics") is not None:  # the partial train/* averages
      train_metrics = metrics_lib.collection_from_json(metrics_lib.TrainMetrics,
                                                      meta["train_metrics"])
    eval_pending = bool(meta.get("eval_pending", False))
    saved_devices = meta.get("num_devices", trainer.mesh.size)
    if config.bn.stats_mode == "per_device" and saved_devices != trainer.mesh.size:
      logging.warning(
          "Resuming a bn.stats_mode='per_device' run on %d devices that was trained on %d: "
          "BN statistics now cover %d instead of %d examples. Use stats_mode='group' to keep "
          "them fixed across device counts.", trainer.mesh.size, saved_devices,
          tc.batch_size // trainer.mesh.size, tc.batch_size // saved_devices)
  start = int(state.step)
  batches = trainer.train_batches(start)
  if start < tc.num_steps:  # decode the first batch before anything is written
    batches = itertools.chain([next(batches)], batches)
  # End of start-up: from here a stop is a checkpoint at the next agreed step.
  stop.interrupt = False
  if stop_agreed(stop, 0):
    raise Stopped(stop.received)
  ckpt_lib.check_or_save_config(workdir, config)  # only once data and checkpoint fit
  writer = metrics_lib.create_writer(workdir)
  if start == 0 and jax.process_index() == 0:
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    writer.write_hparams({"num_params": n_params})

  def meta(eval_pending=False):
    return ckpt_lib.record(
        step=int(state.step), seed=config.seed, batch_size=tc.batch_size,
        nonfinite_steps=int(state.nonfinite_steps), num_devices=trainer.mesh.size,
        train_metrics=_metrics_meta(train_metrics), eval_pending=eval_pending)

  # clu's ReportProgress (steps/s to the writers) and one console line per log step.
  report = progress.TrainProgress(
      writer, name=os.path.basename(os.path.normpath(workdir)), num_steps=tc.num_steps,
      batch_size=tc.batch_size, log_every=tc.log_every, eval_every=tc.eval_every,
      start_step=start, show=jax.process_index() == 0)
  writer = report.writer
  last_eval: Dict[str, float] = {}
  if (start == 0 and tc.eval_at_start and tc.eval_every > 0) or eval_pending:
    last_eval = trainer.evaluate(state)
    writer.write_scalars(start, last_eval)

  for step in range(start + 1, tc.num_steps + 1):
    state, m = trainer.train_step(state, next(batches))
    train_metrics = m if train_metrics is None else train_metrics.merge(m)
    report(step)
    if step % tc.log_every == 0 or step == tc.num_steps:
      skipped = _check_finite(state, policy)
      scalars = {f"train/{k}": v for k, v in train_metrics.compute().items()}
      scalars["train/nonfinite_steps"] = skipped
      writer.write_scalars(step, scalars)
      train_metrics = None
    stopping = stop_agreed(stop, step)  # once per step: a signal may land mid-save
    # A preemption saves first: a due full evaluation is left to the resumed run.
    eval_due = tc.eval_every > 0 and (step % tc.eval_every == 0 or step == tc.num_steps)
    if eval_due and not stopping:
      last_eval = trainer.evaluate(state)
      writer.write_scalars(step, last_eval)
    if step % tc.checkpoint_every == 0 or step == tc.num_steps or stopping:
      _check_finite(state, policy)
      checkpointer.save(step, state, meta(eval_pending=eval_due and stopping), force=True)
    if stopping:
      checkpointer.wait()
      writer.flush()
      report.close()
      logging.warning("preempted at step %d; rerun the same command to resume", step)
      return {**last_eval, "preempted_at_step": step}
  checkpointer.wait()
  writer.flush()
  report.close()
  skipped = int(state.nonfinite_steps)
  if skipped:  # only under policy 'skip'
    logging.warning("%d training step(s) had a non-finite loss or gradients and were skipped "
                    "(first: step %d).", skipped, int(state.first_nonfinite_step))
    last_eval = {**last_eval, "train/nonfinite_steps": skipped}
  return last_eval


# ----------------------------------------------------------------------------
# Fine-tuning: config.train.init_from (README, "Reference weights").

CLASSIFIER = "logits"  # every model's classifier; re-initialised when num_classes differs


def init_from(trainer: Trainer, state: TrainState, spec: str) -> TrainState:
  """`state` (fresh: step 0, new optimizer) with the parameters and BN statistics of
  the run `spec` = 'workdir' or 'workdir@step' (restored and verified like every
  checkpoint); its classifier is kept fresh when the number of classes differs."""
  workdir, step = ckpt_lib.split_step(spec)
  config = trainer.config
  source = ckpt_lib.read_config(workdir)
  if source.model.name != config.model.name:
    raise ValueError(f"train.init_from={spec!r} holds a {source.model.name!r} model, this "
                     f"run trains {config.model.name!r}.")
  model = models.create_model(source)
  abstract = jax.eval_shape(lambda: models.init_variables(model, trainer.source.image_shape,
                                                          jax.random.key(0)))
  checkpointer = ckpt_lib.Checkpointer(workdir)
  try:
    variables, restored_step = checkpointer.restore_variables(
        abstract, sharding.replicated(trainer.mesh), step)
  except ckpt_lib.CheckpointError as e:
    raise ckpt_lib.CheckpointError(f"train.init_from={spec!r}: {e}") from e
  finally:
    checkpointer.close()
  params, batch_stats = dict(variables["params"]), variables.get(BATCH_STATS, {})
  new_head = source.model.num_classes != config.model.num_classes
  if new_head:
    params[CLASSIFIER] = state.params[CLASSIFIER]
  lines = ckpt_lib.shape_mismatches({"params": params, BATCH_STATS: batch_stats},
                                    {"params": state.params, BATCH_STATS: state.batch_stats})
  if lines:
    raise ckpt_lib.CheckpointError(
        f"train.init_from={spec!r} does not fit this model:\n" + "\n".join(lines[:20]) +
        "\nFine-tuning keeps the network (only model.num_classes may differ).")
  msg = (f"Initialised parameters and BN statistics from {workdir} step {restored_step}; "
         f"fresh optimizer from step 0" +
         (f"; classifier re-initialised for {config.model.num_classes} classes (the source "
          f"has {source.model.num_classes})" if new_head else "") + ".")
  logging.info(msg)
  return state.replace(
      params=jax.device_put(params, trainer.state_sharding.params),
      batch_stats=jax.device_put(batch_stats, trainer.state_sharding.batch_stats))
