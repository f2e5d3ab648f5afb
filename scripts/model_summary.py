"""Per-row table of a Figure 5 model: output shape, parameters, multiply-adds.

  python scripts/model_summary.py --config=configs/bn_inception.py
  python scripts/model_summary.py --config=configs/bn_inception.py --config.model.image_size=32

Multiply-adds are analytic (out_h * out_w * k^2 * c_in/groups * c_out per
convolution, c_in * c_out for the classifier; pooling, BN and nonlinearities are
not counted); shapes and parameter counts are checked against the flax model.
"""

from absl import flags
from ml_collections import config_flags

from bn_inception import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                          lock_config=True)
_CHANNELS = flags.DEFINE_integer("channels", 3, "Input image channels.")
flags.mark_flags_as_required(["config"])


def format_table(rows) -> str:
  lines = [f"{'row':<14}{'output':>16}{'params':>14}{'multiply-adds':>16}"]
  for r in rows:
    shape = "x".join(str(d) for d in r.output_shape)
    lines.append(f"{r.name:<14}{shape:>16}{r.params:>14,}{r.macs:>16,}")
  params, macs = sum(r.params for r in rows), sum(r.macs for r in rows)
  lines.append(f"{'total':<14}{'':>16}{params:>14,}{macs:>16,}")
  lines.append(f"= {params / 1e6:.2f} M parameters, {macs / 1e9:.3f} G multiply-adds")
  return "\n".join(lines)


def run():
  from bn_inception.models.inception import model_summary
  config = _CONFIG.value
  if config.model.name != "bn_inception":
    raise ValueError(f"model_summary covers bn_inception, not {config.model.name!r}.")
  rows = model_summary(config, _CHANNELS.value)
  m = config.model
  print(f"{m.name}: {m.image_size}x{m.image_size}x{_CHANNELS.value} input, "
        f"{m.num_classes} classes, BN {'on' if config.bn.enabled else 'off'}, "
        f"first conv {m.first_conv}, 4c/4d pool projection {m.pool_projection_4cd}")
  print(format_table(rows))


if __name__ == "__main__":
  cli.run_app(run)
