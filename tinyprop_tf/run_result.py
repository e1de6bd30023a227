"""``RunResult``: the record of one fine-tuning run (``experiment.finetune`` makes it; ``report``, ``estimates`` and
``sweep`` read it)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class RunResult:
    """One fine-tuning run: per-epoch metrics and accounting, and the final per-layer statistics."""

    name: str
    policy: str
    epochs: list[int]
    metric_name: str
    metric: list[float]  # per epoch, on the test set
    loss: list[float]  # per epoch, training loss
    bwd_macs_sparse: list[float]
    bwd_macs_dense: list[float]
    fwd_macs: list[float]
    select_ops: list[float]
    layers: dict[str, dict]  # layer -> {"kept_ratio": [...per epoch], "k_mean": [...], "entries": M, "depth": p}
    initial_metric: float
    model_path: str | None = None
    frozen_layers: list[str] = dataclasses.field(default_factory=list)  # sparse layers run forward only
    notes: list[str] = dataclasses.field(default_factory=list)  # what the policy chose for this model, in words

    @property
    def final_metric(self) -> float:
        return self.metric[-1]

    @property
    def bwd_ratio(self) -> float:
        """Sparse / dense backward MACs over the whole run."""
        return float(np.sum(self.bwd_macs_sparse) / np.sum(self.bwd_macs_dense))

    def to_dict(self):
        return {**dataclasses.asdict(self), "final_metric": self.final_metric, "bwd_ratio": self.bwd_ratio}
