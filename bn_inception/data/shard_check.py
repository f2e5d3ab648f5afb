"""The checksums of a prepared dataset's shards (data/prepare.py writes them into its
manifest): a damaged shard is found when the data is opened, not mid-training."""

from __future__ import annotations

import concurrent.futures
import json
import os
import zlib
from typing import Dict, Optional

MANIFEST = "manifest.json"


def file_crc32(path: str) -> str:
  crc = 0
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(8 << 20), b""):
      crc = zlib.crc32(chunk, crc)
  return f"{crc:08x}"


def shard_damage(directory: str, shard: Dict) -> Optional[str]:
  """Why `shard` (a manifest entry) no longer matches its file, or None."""
  path = os.path.join(directory, shard["file"])
  if not os.path.isfile(path):
    return "missing"
  size = os.path.getsize(path)
  if size != shard["bytes"]:
    return f"{size} bytes, the manifest says {shard['bytes']}"
  crc = file_crc32(path)
  return None if crc == shard["crc32"] else f"CRC-32 {crc}, the manifest says {shard['crc32']}"


def damaged_shards(directory: str) -> Optional[str]:
  """Check the shards of a prepared dataset against its manifest: None when they all
  match (or there is no manifest), else one message naming every damaged shard."""
  path = os.path.join(directory, MANIFEST)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    shards = json.load(f)["shards"]
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:  # crc32 frees the GIL
    damage = list(pool.map(lambda s: shard_damage(directory, s), shards))
  bad = [f"{s['file']} ({why})" for s, why in zip(shards, damage) if why]
  if not bad:
    return None
  return (f"{len(bad)} shard(s) of the prepared ImageNet in {directory} fail their "
          f"checksum in {MANIFEST}: {'; '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}. "
          f"Rerun scripts/prepare_imagenet.py with the same --input and --output: it "
          f"rewrites the damaged shards and keeps the others.")
