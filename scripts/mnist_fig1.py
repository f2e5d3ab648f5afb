"""The paper's Figure 1: MNIST with and without BN, through the one training loop.

  python scripts/mnist_fig1.py --workdir=workdirs/fig1 [--steps=50000]

Trains <workdir>/bn and <workdir>/no_bn (each resumable: rerun the same command
after a crash), then writes <workdir>/fig1.json and <workdir>/fig1.png.

  python scripts/mnist_fig1.py --redraw=docs/reproduction/fig1.json   # only the figure
"""

import os
import sys
import time

from absl import flags

from bn_inception import cli

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/fig1", "Output directory.")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps (default: the config's 50,000).")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", None, "Evaluate every N steps.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with the MNIST IDX files.")
_SEED = flags.DEFINE_integer("seed", None, "Random seed.")
_REDRAW = flags.DEFINE_string("redraw", None, "Only redraw fig1.png from this fig1.json "
                              "(beside it): nothing is trained.")


def run():
  from configs import mnist_fig1
  from bn_inception import figures, train
  if _REDRAW.value:
    import json
    with open(_REDRAW.value) as f:
      series = json.load(f)
    print(f"wrote {figures.draw_fig1(series, os.path.splitext(_REDRAW.value)[0] + '.png')}")
    return
  series = {}
  for variant in ("bn", "no_bn"):
    config = mnist_fig1.get_config(variant)
    if _STEPS.value is not None:
      config.train.num_steps = _STEPS.value
    if _EVAL_EVERY.value is not None:
      config.train.eval_every = _EVAL_EVERY.value
    if _DATA_DIR.value is not None:
      config.data.data_dir = _DATA_DIR.value
    if _SEED.value is not None:
      config.seed = _SEED.value
    workdir = os.path.join(_WORKDIR.value, variant)
    start = time.time()
    result = train.train_and_evaluate(config, workdir)
    if "preempted_at_step" in result:
      sys.exit(0)
    series[variant] = figures.fig1_series(workdir)
    acc = series[variant]["test_accuracy"]
    print(f"{variant}: final test accuracy {acc[-1]:.4f} after "
          f"{series[variant]['steps'][-1]} steps ({time.time() - start:.0f} s)", flush=True)
  json_path, png_path = figures.write_fig1(series, _WORKDIR.value)
  print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
  cli.run_app(run, start_up="check")  # train_and_evaluate checks its own stops
