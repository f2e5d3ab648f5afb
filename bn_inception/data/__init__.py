"""Data sources: one interface, host-local uint8 batches, deterministic in (seed, step).

Every source yields process-local numpy batches `{"image": uint8[b, H, W, C],
"label": int32[b]}` (eval batches add `"mask": bool[b]`); normalisation happens
on device (`DataSource.normalize`). Training order is a pure function of
(seed, step), so a resumed run sees exactly the examples the uninterrupted run
would have seen.
"""

from bn_inception.data.base import DataSource, DataError
from bn_inception.data.factory import create_source
from bn_inception.schema import default_data_root

__all__ = ["DataSource", "DataError", "default_data_root", "create_source"]
