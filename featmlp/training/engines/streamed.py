"""Training out of core: rows streamed from a sharded feature table, a shard or two at a time.

:func:`featmlp.tables.store.load_features` opens a ``DIR.features/`` directory as
:class:`~featmlp.tables.sharded.ShardedArray` columns. When such a table is larger than
:data:`STREAM_MEMORY_FRACTION` of the free memory (or ``train(..., out_of_core=True)``),
:func:`featmlp.training.train` streams it instead of reading it whole:

- the scaler is fitted in one pass over the shards (:meth:`featmlp.model.scaler.Scaler.fit`); NaN or
  infinite rows come from the table's manifest, which records them as each shard is written
  (:func:`featmlp.tables.passes.nonfinite_rows`; a pass over the shards when it does not);
- validation rows are chosen from the labels exactly as in memory and gathered into memory;
  the training rows stay on disk;
- minibatch optimisers visit the shards in a shuffled order and the rows of each shard in a
  shuffled order (:func:`blocked_permutation`), so consecutive batches read one shard; rows are
  gathered and scaled per batch by :class:`ShardedRows` through the autograd engine;
- full-batch ``"gd"`` sums the gradient over the shards (:class:`StreamedGDEngine`), then
  takes its one step: the step of the table in memory, up to float rounding.

In memory, ``train(X, y, config, blocks=shard_rows)`` shuffles in the same blocked order, so a
streamed run can be repeated on the table in memory (and tests compare the two).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from featmlp import _memory  # _memory.available_memory read when called (tests replace it)
from featmlp._memory import check_memory, format_bytes
from featmlp.errors import ConfigError
from featmlp.model import MLPSpec, loss_function
from featmlp.tables.sharded import ShardedArray
from featmlp.training.engines.autograd import ScaledRows

# A sharded table larger than this share of the free memory is streamed rather than read: the
# rest is left to the network, the batch and whatever else runs on the machine.
STREAM_MEMORY_FRACTION = 0.25
# Rows per forward and backward pass of streamed full-batch gd: bounds its activations.
GD_CHUNK_ROWS = 8192
# Shards a ShardedRows keeps mapped: a batch straddles at most two in the blocked order.
CACHED_SHARDS = 2


def streams(X, out_of_core: bool | None = None) -> bool:
    """Whether :func:`featmlp.training.train` streams ``X`` from disk rather than reading it into memory.

    ``out_of_core=True`` streams a :class:`~featmlp.tables.sharded.ShardedArray` (ConfigError for an
    array in memory), ``False`` reads it, ``None`` streams it when it is larger than
    :data:`STREAM_MEMORY_FRACTION` of the available memory.

    Examples
    --------
    >>> streams(np.zeros((3, 2)))
    False
    """
    if out_of_core is not None and not isinstance(out_of_core, bool):
        raise ConfigError(f"out_of_core must be True, False or None (decide by size), got {out_of_core!r}")
    if out_of_core is False:
        return False
    if not isinstance(X, ShardedArray):
        if out_of_core:
            raise ConfigError(f"out_of_core=True streams a sharded feature table (load_features('DIR.features/')), "
                              f"and X is a {type(X).__name__} already in memory: pass the table's X_train, or "
                              f"out_of_core=None")
        return False
    if out_of_core:
        return True
    free = _memory.available_memory()
    return free is not None and X.nbytes > free * STREAM_MEMORY_FRACTION


def block_ids(blocks, n_rows: int) -> np.ndarray:
    """The block of each of ``n_rows`` rows cut into consecutive blocks of ``blocks`` rows (ConfigError if they do not add up).

    Examples
    --------
    >>> block_ids([2, 0, 3], 5).tolist()
    [0, 0, 2, 2, 2]
    """
    sizes = np.asarray(blocks)
    if sizes.ndim != 1 or not np.issubdtype(sizes.dtype, np.integer) or (sizes < 0).any() or sizes.sum() != n_rows:
        raise ConfigError(f"blocks must be row counts of consecutive blocks adding up to the {n_rows} rows of X "
                          f"(a ShardedArray's shard_rows), got {np.asarray(blocks).tolist()[:8]}")
    return np.repeat(np.arange(len(sizes)), sizes)


def blocked_permutation(block_of: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """An epoch's order of rows: the blocks in a shuffled order, each block's rows shuffled.

    ``block_of[i]`` is the block (shard) of row ``i``. The order of the blocks is drawn first
    (``torch.randperm`` of the number of blocks), then each block's rows in that order, all from
    ``generator``: consecutive batches read one shard, and training in memory with the same
    ``blocks`` draws the same order.

    Examples
    --------
    >>> p = blocked_permutation(np.array([0, 0, 1, 1, 1]), torch.Generator().manual_seed(0))
    >>> sorted(p.tolist()), sorted(p[:2].tolist()) in ([0, 1], [2, 3])
    ([0, 1, 2, 3, 4], True)
    """
    block_of = np.asarray(block_of)
    n_blocks = int(block_of.max()) + 1 if len(block_of) else 0
    members = _members(block_of, n_blocks)
    parts = []
    for b in torch.randperm(n_blocks, generator=generator).tolist():
        rows = members[b]
        if len(rows):
            parts.append(rows[torch.randperm(len(rows), generator=generator)])
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def _members(block_of: np.ndarray, n_blocks: int) -> list[torch.Tensor]:
    """The rows of each block, in increasing order."""
    order = np.argsort(block_of, kind="stable")
    bounds = np.searchsorted(block_of[order], np.arange(n_blocks + 1))
    order = torch.from_numpy(order.astype(np.int64))
    return [order[bounds[b]:bounds[b + 1]] for b in range(n_blocks)]


class ShardedRows(ScaledRows):
    """:class:`~featmlp.training.engines.autograd.ScaledRows` reading its rows from a sharded table's shards.

    ``rows`` are the table rows being trained on (after the validation split), in training
    order: row ``i`` of this source is table row ``rows[i]``, and with ``mirror`` rows
    ``n .. 2n-1`` are their mirror images. The last :data:`CACHED_SHARDS` shards read stay
    mapped, so a batch of the blocked order (:func:`blocked_permutation`) opens no shard the
    previous batch did not; nothing else of the table is held.
    """

    def __init__(self, X: ShardedArray, rows, scaler, mirror, device):
        self.table = X
        rows = np.asarray(rows, np.int64)
        self.shard_of = (np.searchsorted(X.offsets, rows, side="right") - 1).astype(np.int32)
        self.local = rows - X.offsets[self.shard_of]
        self.offset = torch.from_numpy(scaler.offset.astype(np.float32))
        self.scale = torch.from_numpy(scaler.scale.astype(np.float32))
        self.mirror = None if mirror is None else torch.from_numpy(mirror)
        self.n_stored = len(rows)
        self.device = device
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def shard_groups(self, max_rows: int) -> list[torch.Tensor]:
        """This source's rows (mirror images with their originals) grouped by shard, in shard order,
        at most ``max_rows`` a group: what streamed full-batch gd runs forward and back."""
        block_of = self.shard_of if self.mirror is None else np.concatenate([self.shard_of, self.shard_of])
        groups = []
        for rows in _members(block_of, self.table.n_shards):
            groups += list(rows.split(max_rows)) if len(rows) else []
        return groups

    def _shard(self, s: int) -> np.ndarray:
        if s in self._cache:
            self._cache.move_to_end(s)
        else:
            if len(self._cache) >= CACHED_SHARDS:
                self._cache.popitem(last=False)  # unmapped: its pages leave this process
            self._cache[s] = self.table.shard(s)
        return self._cache[s]

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        pos = idx.numpy()
        shards = self.shard_of[pos]
        out = np.empty((len(pos), self.table.n_features), np.float32)
        for s in dict.fromkeys(shards.tolist()):  # each shard once, in the order the batch meets them
            pick = np.flatnonzero(shards == s)
            out[pick] = self._shard(s)[self.local[pos[pick]]]
        return torch.from_numpy(out)

    def split(self, size: int):
        """Scaled rows in order, ``size`` at a time (as ``Tensor.split``)."""
        for start in range(0, len(self), size):
            yield self.rows(torch.arange(start, min(start + size, len(self))))


class StreamedGDEngine:
    """Full-batch gradient descent on rows streamed a shard at a time: one step per epoch.

    The forward and backward pass of each group of :meth:`ShardedRows.shard_groups` add their
    gradient (each sample's loss weighted as in memory) to the parameters' ``.grad``; the
    optimiser steps once they are all summed. The same step as the whole table's in memory, up
    to the order of float summation. Batch norm would normalise each group by its own
    statistics: :func:`featmlp.training.checks.checked_inputs` refuses it.
    """

    def __init__(self, model, spec: MLPSpec, X: ShardedRows, y: torch.Tensor, label_smoothing: float = 0.0):
        self.model = model
        self.loss_fn = loss_function(spec.head, label_smoothing)
        self.X, self.y = X, y
        self.n_classes = spec.n_classes
        self.class_dim = 1
        self.groups = [g.to(y.device) for g in X.shard_groups(GD_CHUNK_ROWS)]

    def prepare(self, batch_size: int) -> None:
        pass

    def run_epoch(self, perm, sw, batch_size, step_fn, lrs):
        """As :meth:`featmlp.training.engines.fast.FastEngine.run_epoch` with one step: logits (N, C),
        per-sample losses and labels, in stored order."""
        n = len(self.y)
        Z = torch.empty(n, self.n_classes, dtype=torch.float32, device=self.y.device)
        L = torch.empty(n, dtype=torch.float32, device=self.y.device)
        self.model.train()
        params = list(self.model.parameters())
        for p in params:
            p.grad.zero_()
        for idx in self.groups:
            out = self.model(self.X.rows(idx))
            losses = self.loss_fn(out, self.y[idx], 1)
            (losses * sw[idx]).sum().backward()  # accumulates into .grad
            Z[idx] = out.detach()
            L[idx] = losses.detach()
        step_fn(lrs[0])
        return Z, L, self.y


def in_memory(X, what: str):
    """``X`` as an array in memory: a :class:`~featmlp.tables.sharded.ShardedArray` read whole after a memory check.

    For what needs all rows at once (the sweep, the learning-rate test): a ConfigError naming
    ``what`` and the sizes when the table does not fit; other arrays are returned as they are.

    Examples
    --------
    >>> in_memory(np.ones((2, 2)), "the sweep").shape
    (2, 2)
    """
    if not isinstance(X, ShardedArray):
        return X
    check_memory(X.nbytes, f"{what} reads the sharded table {X.root} ({X.shape[0]} x {X.shape[1]}, "
                 f"{format_bytes(X.nbytes)}) into memory and", "train on a sample of it, or train it out of core "
                 "with `featmlp train DIR.features/`")
    return np.asarray(X)
