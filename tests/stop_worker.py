"""One process of a multi-process run for tests/test_stop_and_resume.py.

  python tests/stop_worker.py WORKDIR NUM_STEPS OUT_NPZ

trains tests/sharding_worker.py's tiny model on its in-memory data with
train_and_evaluate (jax.distributed from JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/
JAX_PROCESS_ID), prints `result: {...}`, and process 0 writes the final checkpoint's
arrays to OUT_NPZ.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import sharding_worker  # noqa: E402
from bn_inception import train  # noqa: E402

if __name__ == "__main__":
  workdir, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
  config = sharding_worker.tiny_config("global", num_steps=steps)
  config.train.checkpoint_every = 25
  config.train.log_every = 7
  result = train.train_and_evaluate(config, workdir, source=sharding_worker.tiny_source())
  print(f"result: {result}", flush=True)
  state = sharding_worker.final_state(config, workdir)
  if jax.process_index() == 0:
    np.savez(out, **state)
