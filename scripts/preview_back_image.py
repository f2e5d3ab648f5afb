"""A preview of MNIST-back-image (docs/mnist_back_image.md): the first training digit
of each class as MNIST, over its background, rotated, and the same for the test split.

  python scripts/preview_back_image.py --out=docs/reproduction/mnist_back_image.png

Composes (or reads) both variants' caches (bn_inception/data/mnist_back_image.py).
"""

from absl import app, flags
import numpy as np

_OUT = flags.DEFINE_string("out", "docs/reproduction/mnist_back_image.png", "PNG to write.")


def first_of_each_class(images, labels):
  return np.stack([images[np.flatnonzero(labels == k)[0], ..., 0] for k in range(10)])


def main(argv):
  del argv
  from bn_inception import figures, schema
  from bn_inception.data import DataError, mnist_back_image
  rows = {}
  try:
    for variant in ("plain", "rotated"):
      source = mnist_back_image.create(schema.mnist_back_image_data_config(variant=variant))
      for split, images, labels in (("train", source.train_images, source.train_labels),
                                    ("test", source.eval_images, source.eval_labels)):
        rows[f"{variant}\n{split}"] = first_of_each_class(images, labels)
  except DataError as e:
    raise SystemExit(f"error: {e}")
  print(figures.write_example_grid(rows, _OUT.value))


if __name__ == "__main__":
  app.run(main)
