"""``diffcompose batch``: many jobs from one JSON-lines manifest, resumable, sharded under ``accelerate launch``.

See :mod:`diffcompose.batch.manifest` for the manifest and output-folder contract that
``diffcompose evaluate`` reads. No torch here (a classical batch never imports it).
"""

from diffcompose.batch.manifest import Item, read_manifest, read_results
from diffcompose.batch.runner import BatchSummary, run_batch

__all__ = ["BatchSummary", "Item", "read_manifest", "read_results", "run_batch"]
