"""What a restore checks: the stored shapes against the model, and a CRC32 of every
array against the one its checkpoint's record carries (orbax restores garbled, not
truncated, array files silently)."""

from __future__ import annotations

import zlib
from typing import Dict, Optional

import jax
import numpy as np


def _path_str(path) -> str:
  """'params/dense0/kernel' for both a TrainState path and orbax's stored dict path."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _host_copy(x) -> Optional[np.ndarray]:
  """The whole array on this host, or None if this host holds only part of it."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if not x.is_fully_replicated:
      return None
    x = x.addressable_data(0)  # replicated: any local copy is the whole array
  return np.asarray(x)


def state_checksums(state) -> Dict[str, str]:
  """CRC32 of every array of the state, keyed by its path (for the JSON record)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    a = _host_copy(leaf)
    if a is not None:
      raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)  # any dtype, no copy
      out[_path_str(path)] = f"{zlib.crc32(raw) & 0xffffffff:08x}"
  return out


def checksum_mismatches(state, expected: Optional[Dict[str, str]]) -> list:
  """Paths of the arrays whose CRC32 differs from `expected` (None: a checkpoint of an
  older version, which has no checksums)."""
  if expected is None:
    return []
  actual = state_checksums(state)
  return sorted(k for k in actual if expected.get(k) != actual[k])


def shape_mismatches(stored_tree, abstract_state) -> list:
  """Lines naming every array whose path or shape differs between checkpoint and model."""
  stored = {_path_str(p): tuple(m.shape) for p, m in
            jax.tree_util.tree_flatten_with_path(stored_tree)[0]}
  wanted = {_path_str(p): tuple(a.shape) for p, a in
            jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
  lines = [f"  {k}: checkpoint {stored[k]}, model {wanted[k]}"
           for k in sorted(set(stored) & set(wanted)) if stored[k] != wanted[k]]
  lines += [f"  {k}: in the checkpoint {stored[k]}, not in the model"
            for k in sorted(set(stored) - set(wanted))]
  lines += [f"  {k}: in the model {wanted[k]}, not in the checkpoint"
            for k in sorted(set(wanted) - set(stored))]
  return lines
