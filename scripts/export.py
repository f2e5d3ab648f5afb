"""Export a trained (or imported) workdir for inference outside JAX, checked against JAX.

  python scripts/export.py --workdir=runs/bn_x30 --format=stablehlo --output=export/x30_hlo
  python scripts/export.py --workdir=runs/tfslim_v2@0 --format=savedmodel --output=export/sm
  python scripts/export.py --workdir=/tmp/bn --format=onnx --output=export/mnist_onnx

--workdir is `dir` (newest usable checkpoint) or `dir@STEP`. The export takes uint8
NHWC images at config.model.image_size (any batch size), normalises them as the run
did, and returns `logits` and `probabilities`; BN uses its stored statistics. It is
run in its own runtime (JAX, TensorFlow, onnxruntime) on sample images and compared
with the JAX model before --output is written: a folder with the artefact and
export.json (source, checksums, config, input, normalisation, classes, agreement).
"""

from absl import flags

from bn_inception import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir, `dir` or `dir@STEP`.")
_FORMAT = flags.DEFINE_string("format", None, "stablehlo | savedmodel | onnx.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to write (must not exist unless "
                              "--overwrite).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
_DTYPE = flags.DEFINE_string("dtype", "float32", "Compute dtype of the export: float32 "
                             "(default, also for bf16-trained runs) or bfloat16.")
flags.mark_flags_as_required(["workdir", "format", "output"])


def run():
  from bn_inception import export
  meta = export.export(_WORKDIR.value, _FORMAT.value, _OUTPUT.value,
                       overwrite=_OVERWRITE.value, dtype=_DTYPE.value)
  agreement = meta["agreement_with_jax"]
  print(f"exported {meta['source']['workdir']} step {meta['source']['step']} as "
        f"{meta['format']} ({meta['compute_dtype']}) to {_OUTPUT.value}: "
        f"{meta['file']} and {export.METADATA}\nagreement with JAX on "
        f"{agreement['num_images']} images: relative error logits "
        f"{agreement['logits_relative_error']:.2g}, probabilities "
        f"{agreement['probabilities_relative_error']:.2g}; top-5 identical "
        f"{agreement['top5_identical']}", flush=True)


if __name__ == "__main__":
  cli.run_app(run)
