"""What every config section shares: the ConfigDict, overriding a section's fields,
where data is found by default, and ImageNet's normalisation.

Imports only the standard library, ml_collections and workdir.py (standard library
only): loading or checking a config costs no TensorFlow or JAX.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping

import ml_collections

from bn_inception import workdir  # the repository's root (standard library only)

ConfigDict = ml_collections.ConfigDict

# <repo> -> <repo>/../shared/data
_REPO_ROOT = pathlib.Path(workdir.REPO_ROOT)
DATA_ENV_VAR = "BN_INCEPTION_DATA"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_data_root() -> str:
  """$BN_INCEPTION_DATA if set, else the shared data folder beside the repo."""
  return os.environ.get(DATA_ENV_VAR, str(_REPO_ROOT.parent / "shared" / "data"))


def override_fields(section: ConfigDict, what: str,
                    overrides: Mapping[str, Any]) -> ConfigDict:
  """`section` with `overrides` set; KeyError naming `what` for a field it lacks."""
  for key, value in overrides.items():
    if key not in section:
      raise KeyError(f"{what} has no field {key!r}; fields: {sorted(section)}.")
    section[key] = value
  return section
