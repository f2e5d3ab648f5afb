"""Runs in a subprocess for tests/test_sharding.py, on however many (simulated) devices it sees.

JAX must be told the CPU device count before it starts, and pytest's process
may already have started JAX, so the multi-device work happens here:

  python tests/sharding_worker.py measure OUT_DIR
      train/grad/forward measurements on an 8-device mesh and on a 1-device mesh
      (jax.devices()[:1]) of the same process, written as .npz/.json to OUT_DIR.
  python tests/sharding_worker.py checkpoint OUT_DIR
      train_and_evaluate on one mesh, resume on the other (8 -> 1, 1 -> 8), and an
      uninterrupted run; their final checkpoints to OUT_DIR/ckpt_*.npz.
  python tests/sharding_worker.py train STATS_MODE OUT_DIR WORKDIR:STEPS [...]
      for each job, train_and_evaluate on every device of every process (resuming
      from WORKDIR), then its final state, flattened, to OUT_DIR/<workdir>_<steps>.npz
      (written by process 0).
"""

from __future__ import annotations

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bn_inception import checkpoint as ckpt_lib  # noqa: E402
from bn_inception import metrics as metrics_lib  # noqa: E402
from bn_inception import sharding, train  # noqa: E402
from bn_inception.batchnorm import BATCH_STATS, BatchNorm  # noqa: E402
from bn_inception.data.in_memory import InMemorySource  # noqa: E402
from configs import mnist_fig1  # noqa: E402

GLOBAL_BATCH = 32
DEVICE_A, DEVICE_B = 3, 5   # the isolation check changes A's examples and watches B


def tiny_config(stats_mode="global", group_size=0, num_steps=4):
  """configs/mnist_fig1.py shrunk: 2 x 16 BN-sigmoid units, SGD with momentum."""
  c = mnist_fig1.get_config()
  c.model.hidden_units = (16, 16)
  c.model.init_stddev = 0.1
  c.model.image_size = 4  # tiny_source's 4x4 images (checked against the data)
  c.bn.stats_mode = stats_mode
  c.bn.group_size = group_size
  c.optim.learning_rate = 0.5
  c.optim.momentum = 0.9
  c.train.batch_size = GLOBAL_BATCH
  c.train.eval_batch_size = GLOBAL_BATCH
  c.train.num_steps = num_steps
  c.train.eval_every = 0
  c.train.eval_at_start = False
  c.train.log_every = 1
  c.train.checkpoint_every = 2
  return c


def tiny_source():
  """128 random 4x4 uint8 'images' with labels that depend on them (no dataset I/O)."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(160, 4, 4, 1), dtype=np.uint8)
  labels = (images.reshape(160, -1)[:, :10].argmax(axis=1)).astype(np.int32)
  return InMemorySource(images[:128], labels[:128], images[128:], labels[128:], num_classes=10)


def flat(tree, prefix: str) -> dict:
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {prefix + jax.tree_util.keystr(path): np.asarray(jax.device_get(leaf))
          for path, leaf in leaves}


def loss_and_grads(trainer: train.Trainer, state, batch):
  """The training loss, its gradients and the new BN moving averages, for one batch."""
  def fn(state, batch):
    images = trainer.source.normalize(batch["image"])
    rng = jax.random.fold_in(trainer.base_rng, state.step)

    def loss_fn(params):
      logits, mutated = state.apply_fn(
          {"params": params, BATCH_STATS: state.batch_stats}, images, train=True,
          rngs={"dropout": rng}, mutable=[BATCH_STATS])
      return metrics_lib.cross_entropy(logits, batch["label"]).mean(), mutated[BATCH_STATS]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return loss, grads, stats
  repl = sharding.replicated(trainer.mesh)
  return jax.jit(fn, in_shardings=(trainer.state_sharding, sharding.batch_sharding(trainer.mesh)),
                 out_shardings=repl)(state, batch)


def run_steps(config, mesh, num_steps: int = 3) -> dict:
  """Loss/gradients of step 1, then the state after `num_steps` train steps."""
  trainer = train.Trainer(config, mesh=mesh, source=tiny_source())
  state = trainer.init_state()
  batches = trainer.train_batches(0)
  batch = next(batches)
  loss, grads, stats = loss_and_grads(trainer, state, batch)
  out = {"loss": np.asarray(loss), "step1_image": np.asarray(jax.device_get(batch["image"])),
         **flat(grads, "grads"), **flat(stats, "step1_batch_stats")}
  out.update(flat(state.params, "init_params"))
  losses = []
  for _ in range(num_steps):
    state, m = trainer.train_step(state, batch)
    losses.append(float(m.compute()["loss"]))
    batch = next(batches)
  out["losses"] = np.asarray(losses)
  out.update(flat(state.params, "params"))
  out.update(flat(state.batch_stats, "batch_stats"))
  out.update(flat(state.opt_state, "opt_state"))
  # Moving averages must be the same on every device: fully replicated, equal shards.
  replicated = all(
      leaf.sharding.is_fully_replicated and all(
          np.array_equal(np.asarray(s.data), np.asarray(leaf.addressable_shards[0].data))
          for s in leaf.addressable_shards)
      for leaf in jax.tree.leaves(state.batch_stats))
  out["batch_stats_replicated"] = np.asarray(replicated)
  out["num_devices"] = np.asarray(mesh.size)
  return out


def forward_fn(trainer: train.Trainer):
  """Train-mode forward on a sharded batch -> (logits, every BN layer's output)."""
  def fn(state, images):
    logits, mutated = state.apply_fn(
        {"params": state.params, BATCH_STATS: state.batch_stats},
        trainer.source.normalize(images), train=True, mutable=[BATCH_STATS, "intermediates"],
        capture_intermediates=lambda module, _: isinstance(module, BatchNorm))
    bn_out = {k: v["__call__"][0] for k, v in mutated["intermediates"].items()}
    return logits, bn_out
  data = sharding.batch_sharding(trainer.mesh)
  return jax.jit(fn, in_shardings=(trainer.state_sharding, data), out_shardings=data)


def shard_on(array, device):
  (shard,) = [s for s in array.addressable_shards if s.device == device]
  return np.asarray(shard.data)


COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")


def collectives(compiled_text: str) -> dict:
  return {op: compiled_text.count(f" {op}(") + compiled_text.count(f" {op}-start(")
          for op in COLLECTIVES}


def forward_checks(stats_mode: str, mesh) -> dict:
  """Isolation and communication of one stats mode on `mesh`.

  isolation: the largest change of device B's train-mode outputs (logits and
  every BN layer's output) when only device A's examples change.
  collectives: what XLA compiled into the train-mode forward pass (logits
  only) and into the whole train step.
  """
  trainer = train.Trainer(tiny_config(stats_mode), mesh=mesh, source=tiny_source())
  state = trainer.init_state()
  images = tiny_source().train_images[:GLOBAL_BATCH]
  per_device = GLOBAL_BATCH // mesh.size
  changed = images.copy()
  a = slice(DEVICE_A * per_device, (DEVICE_A + 1) * per_device)
  changed[a] = 255 - changed[a]
  data = sharding.batch_sharding(mesh)
  fwd = forward_fn(trainer)
  before = fwd(state, jax.device_put(images, data))
  after = fwd(state, jax.device_put(changed, data))
  dev_a, dev_b = mesh.devices.flat[DEVICE_A], mesh.devices.flat[DEVICE_B]
  isolation = {}
  for name, x0, x1 in [("logits", before[0], after[0])] + [
      (f"{k}_output", before[1][k], after[1][k]) for k in sorted(before[1])]:
    isolation[name] = {
        "device_b_max_change": float(np.abs(shard_on(x1, dev_b) - shard_on(x0, dev_b)).max()),
        "device_a_max_change": float(np.abs(shard_on(x1, dev_a) - shard_on(x0, dev_a)).max()),
        "device_b_rows": shard_on(x0, dev_b).shape[0]}

  def logits_only(state, images):  # the normalised forward pass, moving averages unused
    return state.apply_fn({"params": state.params, BATCH_STATS: state.batch_stats},
                          trainer.source.normalize(images), train=True,
                          mutable=[BATCH_STATS])[0]
  forward = jax.jit(logits_only, in_shardings=(trainer.state_sharding, data),
                    out_shardings=data).lower(state, images).compile().as_text()
  step = trainer.train_step.lower(state, next(trainer.train_batches(0))).compile().as_text()
  return {"isolation": isolation,
          "collectives": {"forward": collectives(forward), "train_step": collectives(step)}}


def measure(out_dir: str, mesh8, mesh1):
  per_device = GLOBAL_BATCH // 8
  runs = {
      "global_8dev": (tiny_config("global"), mesh8),
      "global_1dev": (tiny_config("global"), mesh1),
      "per_device_8dev": (tiny_config("per_device"), mesh8),
      "group_1dev": (tiny_config("group", group_size=per_device), mesh1),
  }
  for name, (config, mesh) in runs.items():
    np.savez(os.path.join(out_dir, f"{name}.npz"), **run_steps(config, mesh))
  report = {m: forward_checks(m, mesh8) for m in ("per_device", "global")}
  report["per_device_batch"] = per_device
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump(report, f, indent=1)


def final_state(config, workdir: str, mesh=None) -> dict:
  """The newest checkpoint in `workdir`, restored onto `mesh`, flattened."""
  trainer = train.Trainer(config, mesh=mesh, source=tiny_source())
  checkpointer = ckpt_lib.Checkpointer(workdir, 1, 10)
  state, meta = checkpointer.restore(trainer.abstract_state)
  checkpointer.close()
  return {"step": np.asarray(state.step), "saved_on_devices": np.asarray(meta["num_devices"]),
          **flat(state.params, "params"), **flat(state.batch_stats, "batch_stats"),
          **flat(state.opt_state, "opt_state")}


def checkpoint_across_meshes(out_dir: str, mesh8, mesh1, steps: int = 2):
  """Train `steps` on one mesh, resume to 2*steps on the other; and uninterrupted runs."""
  config = lambda n: tiny_config("global", num_steps=n)
  plan = {"8to1": [(mesh8, steps), (mesh1, 2 * steps)],
          "1to8": [(mesh1, steps), (mesh8, 2 * steps)],
          "uninterrupted_1": [(mesh1, 2 * steps)]}
  legs_run = {}
  for name, legs in plan.items():
    workdir = os.path.join(out_dir, "workdirs", name)
    legs_run[name] = []
    for mesh, n in legs:
      train.train_and_evaluate(config(n), workdir, source=tiny_source(), mesh=mesh)
      state = final_state(config(n), workdir, mesh1)
      legs_run[name].append({"step": int(state["step"]),
                             "saved_on_devices": int(state["saved_on_devices"])})
    np.savez(os.path.join(out_dir, f"ckpt_{name}.npz"), **state)
  with open(os.path.join(out_dir, "legs.json"), "w") as f:
    json.dump(legs_run, f)


def train_and_dump(stats_mode: str, out_dir: str, *jobs: str):
  """Each job WORKDIR:STEPS trains (or resumes) on every device of every process."""
  for job in jobs:
    workdir, steps = job.rsplit(":", 1)
    config = tiny_config(stats_mode, group_size=GLOBAL_BATCH // 8, num_steps=int(steps))
    train.train_and_evaluate(config, workdir, source=tiny_source())
    state = final_state(config, workdir)
    if jax.process_index() == 0:
      name = f"{os.path.basename(workdir.rstrip('/'))}_{steps}.npz"
      np.savez(os.path.join(out_dir, name), num_devices=np.asarray(jax.device_count()),
               process_count=np.asarray(jax.process_count()), **state)


if __name__ == "__main__":
  command, args = sys.argv[1], sys.argv[2:]
  if command in ("measure", "checkpoint"):
    out_dir = args[0]
    os.makedirs(out_dir, exist_ok=True)
    devices = jax.devices()
    if len(devices) != 8:
      raise SystemExit(f"expected 8 devices, JAX sees {len(devices)}")
    mesh8, mesh1 = sharding.create_mesh(devices), sharding.create_mesh(devices[:1])
    if command == "measure":
      measure(out_dir, mesh8, mesh1)
    else:
      checkpoint_across_meshes(out_dir, mesh8, mesh1)
  elif command == "train":
    train_and_dump(*args)
  else:
    raise SystemExit(f"unknown command {command!r}")
