"""Fine-tuning: `config.train.init_from` starts a run from another run's network
(docs/reference-weights.md): its parameters and BN statistics, a fresh optimizer at
step 0 and, when model.num_classes differs, a fresh classifier."""

from __future__ import annotations

import logging

import jax

from bn_inception import checkpoint as ckpt_lib
from bn_inception import checkpoint_verify
from bn_inception import workdir as workdir_lib
from bn_inception import workdir_config
from bn_inception import models, sharding
from bn_inception.batchnorm import BATCH_STATS

def init_from(trainer, state, spec: str):
  """`state` (fresh: step 0, new optimizer) with the parameters and BN statistics of
  the run `spec` = 'workdir' or 'workdir@step' (restored and verified like every
  checkpoint); its classifier is kept fresh when the number of classes differs.
  `trainer` is the run's `train.Trainer` (its config, data, mesh and sharding)."""
  workdir, step = workdir_lib.split_step(spec)
  config = trainer.config
  source = workdir_config.read_config(workdir)
  if source.model.name != config.model.name:
    raise ValueError(f"train.init_from={spec!r} holds a {source.model.name!r} model, this "
                     f"run trains {config.model.name!r}.")
  params, batch_stats, restored_step = _restore(trainer, source, spec, workdir, step)
  new_head = source.model.num_classes != config.model.num_classes
  if new_head:  # the registry names each model's classifier (schema.MODELS)
    head = models.classifier(config)
    params[head] = state.params[head]
  lines = checkpoint_verify.shape_mismatches({"params": params, BATCH_STATS: batch_stats},
                                    {"params": state.params, BATCH_STATS: state.batch_stats})
  if lines:
    raise workdir_lib.CheckpointError(
        f"train.init_from={spec!r} does not fit this model:\n" + "\n".join(lines[:20]) +
        "\nFine-tuning keeps the network (only model.num_classes may differ).")
  logging.info(
      "Initialised parameters and BN statistics from %s step %d; fresh optimizer from step "
      "0%s.", workdir, restored_step,
      f"; classifier re-initialised for {config.model.num_classes} classes (the source has "
      f"{source.model.num_classes})" if new_head else "")
  return state.replace(
      params=jax.device_put(params, trainer.state_sharding.params),
      batch_stats=jax.device_put(batch_stats, trainer.state_sharding.batch_stats))


def _restore(trainer, source, spec: str, workdir: str, step):
  """(params, BN statistics, step) of the source run's checkpoint."""
  model = models.create_model(source)
  abstract = jax.eval_shape(lambda: models.init_variables(model, trainer.source.image_shape,
                                                          jax.random.key(0)))
  checkpointer = ckpt_lib.Checkpointer(workdir)
  try:
    variables, restored_step = checkpointer.restore_variables(
        abstract, sharding.replicated(trainer.mesh), step)
  except workdir_lib.CheckpointError as e:
    raise workdir_lib.CheckpointError(f"train.init_from={spec!r}: {e}") from e
  finally:
    checkpointer.close()
  return dict(variables["params"]), variables.get(BATCH_STATS, {}), restored_step
