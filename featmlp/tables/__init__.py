"""Feature tables on disk: one ``.npz`` file or a directory of shards, their fitted state, and extraction.

- :mod:`~featmlp.tables.format`: the names a table on disk is made of (imports nothing).
- :mod:`~featmlp.tables.store`: :class:`FeatureTable`, :func:`save_features`,
  :func:`load_features` (a file or a sharded directory), :func:`save_sharded`, the fitted state.
- :mod:`~featmlp.tables.sharded`: the sharded format: shards, records, manifest,
  :class:`ShardedArray`.
- :mod:`~featmlp.tables.passes`: passes over a table a block at a time (``row_blocks``,
  ``column_stats``, ``nonfinite_rows``).
- :mod:`~featmlp.tables.extract`: images to tables, chunked, resumable, atomic
  (:func:`extract_dataset`, :func:`extract_to_shards`).
- :mod:`~featmlp.tables.cluster`: the Dask path of ``extract_to_shards``.

The names load lazily (:func:`featmlp._exports.lazy_exports`).
"""

from featmlp._exports import lazy_exports

_NAMES = {
    **dict.fromkeys(["FeatureTable", "load_features", "save_features", "save_sharded", "table_fingerprint"],
                    "featmlp.tables.store"),
    **dict.fromkeys(["ShardedArray", "ShardNames"], "featmlp.tables.sharded"),
    **dict.fromkeys(["extract_dataset", "extract_to_shards", "default_chunk_size"], "featmlp.tables.extract"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _NAMES)
