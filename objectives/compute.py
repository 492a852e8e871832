"""A trial's compute ledger: training seconds and an estimated FLOP count.

FLOPs count 2 per multiply-add. A training sample costs its forward pass and a backward pass
of about twice that (the usual estimate: gradients for activations and for weights), so 3x
the forward; an evaluated sample costs one forward. ``forward_flops`` of a module is measured
once with torch's ``FlopCounterMode`` (matmuls and convolutions; element-wise work such as
activations and BatchNorm is left out, a few percent for these models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BACKWARD_FACTOR = 2  # a backward pass costs about twice the forward


@dataclass
class ComputeLedger:
    """Running totals of one trial's work; ``as_dict`` is what the trial records."""

    forward_flops: float  # one sample's forward pass
    train_samples: int = 0
    eval_samples: int = 0
    train_seconds: float = 0.0

    def add(self, *, train: int = 0, evaluated: int = 0, seconds: float = 0.0) -> None:
        """Count ``train`` training samples (forward and backward), ``evaluated`` forward-only
        samples and ``seconds`` of training time."""
        self.train_samples += train
        self.eval_samples += evaluated
        self.train_seconds += seconds

    @property
    def flops(self) -> float:
        return (self.forward_flops * (1 + BACKWARD_FACTOR) * self.train_samples
                + self.forward_flops * self.eval_samples)

    def as_dict(self) -> dict[str, float]:
        return {"train_seconds": round(self.train_seconds, 4), "flops": float(self.flops),
                "forward_flops_per_sample": float(self.forward_flops),
                "train_samples": float(self.train_samples),
                "eval_samples": float(self.eval_samples)}


def forward_flops(module: Any, example: Any) -> float:
    """FLOPs of ``module``'s forward pass on one sample (``example`` has a batch of one)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(example)
    module.train(was_training)
    return float(counter.get_total_flops())


def merge_ledgers(ledgers: list[dict[str, float]]) -> dict[str, float]:
    """The totals of several runs' ledgers (the seeds of one trial)."""
    keys = ("train_seconds", "flops", "train_samples", "eval_samples")
    merged = {key: float(sum(ledger.get(key, 0.0) for ledger in ledgers)) for key in keys}
    if ledgers:
        merged["forward_flops_per_sample"] = float(ledgers[0].get("forward_flops_per_sample", 0))
    return merged
