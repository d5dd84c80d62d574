"""A byte counter for memory checks without a GPU: the peak of tensor storages alive at once inside a mode."""
from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages allocated inside the mode and still alive (a view of an existing
    storage is not an allocation). Storages keep their Python object, so a finalizer sees each one freed."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.alive = set()

    def _freed(self, key, nbytes):
        self.alive.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = id(storage)
                if key in inputs or key in self.alive:
                    continue
                self.alive.add(key)
                self.live += storage.nbytes()
                weakref.finalize(storage, self._freed, key, storage.nbytes())
                self.peak = max(self.peak, self.live)
        return out
