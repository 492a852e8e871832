"""Train many MLP configs at once as lanes of one batched model (a population trainer).

One small MLP step is mostly per-operation overhead (Python, autograd, the optimizer), not
arithmetic. ``train_lanes`` stacks K configs as K lanes of one model: every layer is one
batched matmul over the lanes (``baddbmm`` on ``[K, batch, width]``), every lane's parameters
live in one flat tensor, and the optimizer (Adam or SGD, with per-lane learning rate, weight
decay and momentum) is a handful of element-wise operations over that tensor. Each lane gets
exactly what it would get alone in ``objectives.mlp.fit``: its initial weights are copied from
the single-trial model built with its seed, it draws its own batch order from its own
generator, and it reports every epoch to its own reporter.

Lanes share a *pack* when their data settings, batch size and optimizer agree (BatchNorm is
per lane). Inside a pack, widths are padded to the pack's width (16, 32, 64, 128, ...) with
units whose weights and gradients are held at zero, and depths to the pack's depth with
masked pass-through layers. Padding small widths costs little next to the per-operation
overhead it shares (measured: five depth/width shapes of width <= 16 as one d10 w16 pack
step in 2.5 ms against 5.5 ms one by one); from width 32 on a padded unit costs what a real
one does, hence width buckets.
Packs with different keys are grouped: each trains one epoch in turn, so every lane moves
epoch by epoch. A lane leaves when its epochs are done, when its reporter says stop, or when
its loss diverges; ``refill`` can then add new lanes at the epoch boundary.

This module knows nothing about Optuna or Ray.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from objectives.compute import ComputeLedger, forward_flops
from objectives.config import check_config
from objectives.errors import DivergedError
from objectives.euro_data import (
    IMPLICIT_FREQUENCIES,
    NUM_CLASSES,
    EuroData,
    load_euro,
    make_features,
)
from objectives.mlp import (
    BOUNDARY_GRID,
    EVAL_BATCH_SIZE,
    METRICS,
    MLP,
    Config,
    _decision_boundary,
    _npy,
    _npz,
    _save_previews,
    _standardizer,
)
from objectives.reporter import Reporter
from objectives.runtime import Runtime

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
MIN_PACK_WIDTH = 16
HEAD = -1  # the pack layer index of the output layer


@dataclass
class LaneTask:
    """One config to train as a lane, the reporter it reports to, and the caller's tag."""

    config: Config
    reporter: Reporter
    tag: Any = None


@dataclass
class LaneEnd:
    """How a lane ended: its final metrics and model, or the error that ended it."""

    task: LaneTask
    metrics: dict[str, float] | None = None
    model: MLP | None = None
    error: BaseException | None = None


def count_hits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each lane's number of rows whose target class has the largest logit: ``[K]`` from
    logits ``[K, n, classes]`` and targets ``[K, n]``.

    ``(logits.argmax(-1) == target).sum(1)`` but 7x faster on a CPU (argmax over 33
    classes does not vectorise; amax does). The two differ only where the target ties with
    an earlier class for the largest logit, which float logits do not do.
    """
    picked = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return (picked >= logits.amax(-1)).sum(1)


def lane_group(config: Config) -> tuple[Any, ...]:
    """The pack a config's lane joins (see ``pack_key``), without loading data."""
    in_features = 2 if config.features == "raw" else 2 * len(IMPLICIT_FREQUENCIES)
    return pack_key(config, in_features)


def pack_key(config: Config, in_features: int) -> tuple[Any, ...]:
    """Lanes with equal keys train in one pack (one batched model). BatchNorm is per lane
    (a lane without it passes its pre-norm activations on), so it does not split packs."""
    residual_first = config.residual and config.width == in_features  # block 0 adds its input
    width = config.width if residual_first else _width_bucket(config.width)
    return (config.features, config.standardize, config.train_fraction, config.train_on,
            config.batch_size, config.optimizer, residual_first, width)


def train_lanes(tasks: Sequence[LaneTask], runtime: Runtime, on_end: Callable[[LaneEnd], None],
                *, capacity: int | None = None,
                refill: Callable[[int], list[LaneTask]] | None = None) -> None:
    """Train ``tasks`` as lanes until every lane has ended; ``on_end`` hears of each end.

    Args:
        tasks: The first lanes.
        runtime: Where to train and where the data is.
        on_end: Called once per lane, when it ends (done, stopped early, diverged or failed).
        capacity: The most lanes at once (default: ``len(tasks)``).
        refill: Called at each epoch boundary with the number of free slots; returns new
            lanes (possibly none) to start.
    """
    device = torch.device(runtime.device)
    data = load_euro(runtime.data_dir)
    capacity = capacity or max(1, len(tasks))
    packs: dict[tuple[Any, ...], _Pack] = {}

    def add(new_tasks: Sequence[LaneTask]) -> None:
        for task in new_tasks:
            try:
                check_config(task.config)
                if data.synthetic:
                    task.reporter.log("synthetic_data", True)
                lane = _Lane(task, data, device)
            except Exception as exc:
                on_end(LaneEnd(task, error=exc))
                continue
            key = pack_key(task.config, lane.in_features)
            if key not in packs:
                packs[key] = _Pack(key, data, runtime)
            packs[key].add(lane)

    add(tasks)
    while any(pack.lanes for pack in packs.values()):
        for key, pack in list(packs.items()):
            if not pack.lanes:
                del packs[key]
                continue
            for end in pack.train_epoch():
                on_end(end)
        free = capacity - sum(len(pack.lanes) for pack in packs.values())
        if refill is not None and free > 0:
            add(refill(free))


def _width_bucket(width: int) -> int:
    """16 for small lanes, else the next power of two: the pack width for a lane of
    ``width``. Widths up to 16 are all overhead, so padding them pays; from 32 on a padded
    unit costs as much as a real one (measured, 8 lanes of d6 w32: 2.4 ms a step at batch
    256 as their own w32 pack, 8.0 ms padded to w64, the same as 8 w64 lanes), so a lane is
    padded at most to the next power of two (96 -> 128)."""
    if width <= MIN_PACK_WIDTH:
        return MIN_PACK_WIDTH
    return 1 << (width - 1).bit_length()


@dataclass
class _Lane:
    """One lane's own state: its config, reporter, data subset, batch order and records."""

    task: LaneTask
    data: EuroData
    device: torch.device
    epoch: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    batch_losses: list[np.ndarray] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        config = self.task.config
        # The single-trial path seeds here, builds its data, then its model: same order.
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        n_full = len(self.data.x_train)
        keep = np.arange(n_full)
        if config.train_fraction < 1.0:
            keep = np.random.default_rng(config.seed).permutation(n_full)
            keep = np.sort(keep[: max(1, int(n_full * config.train_fraction))])
        if config.train_on == "train+val":  # rows of the validation split follow the train rows
            keep = np.concatenate([keep, n_full + np.arange(len(self.data.x_val))])
        self.subset = torch.from_numpy(keep).to(self.device)
        self.in_features = make_features(self.data.x_train[:1], config.features).shape[1]
        self.model = MLP(self.in_features, config)  # its initial weights are the lane's
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        x_one = torch.from_numpy(make_features(self.data.x_train[:1], config.features))
        self.ledger = ComputeLedger(forward_flops(self.model, x_one))  # unpadded: its own

    @property
    def config(self) -> Config:
        return self.task.config

    @property
    def reporter(self) -> Reporter:
        return self.task.reporter


class _Pack:
    """Lanes of one pack key as one batched model, trained one epoch at a time."""

    def __init__(self, key: tuple[Any, ...], data: EuroData, runtime: Runtime):
        (features, standardize, _, _, self.batch_size, self.optimizer, _,
         self.width) = key
        self.data = data
        self.runtime = runtime
        self.device = device = torch.device(runtime.device)
        config = Config(features=features, standardize=standardize)
        mean, std = _standardizer(data, config)
        x_all = np.concatenate([data.x_train, data.x_val])
        y_all = np.concatenate([data.y_train, data.y_val])
        self.x_all = torch.from_numpy(make_features(x_all, features, mean, std)).to(device)
        self.y_all = torch.from_numpy(y_all).to(device)
        self.evals = {"val": (self.x_all[len(data.x_train):], self.y_all[len(data.x_train):]),
                      "test": (torch.from_numpy(make_features(data.x_test, features, mean, std)
                                                ).to(device),
                               torch.from_numpy(data.y_test).to(device))}
        self.in_features = self.x_all.shape[1]
        self.lanes: list[_Lane] = []
        self.depth = 0
        self.state: _PackState | None = None

    def add(self, lane: _Lane) -> None:
        """Add a lane (at an epoch boundary): the stacked tensors are rebuilt around it."""
        lanes = [*self.lanes, lane]
        self._rebuild(lanes, kept=[*range(len(self.lanes))])

    def train_epoch(self) -> list[LaneEnd]:
        """Train every lane one epoch, report it, and return the lanes that ended."""
        assert self.state is not None
        state, lanes, k = self.state, self.lanes, len(self.lanes)
        n_train = len(lanes[0].subset)
        start = time.perf_counter()
        # Each lane draws its permutation from its own generator, as it would alone.
        orders = torch.stack([lane.subset[torch.randperm(n_train, generator=lane.generator)
                                          .to(self.device)] for lane in lanes])
        n_steps = math.ceil(n_train / self.batch_size)
        losses = torch.empty(k, n_steps, device=self.device)
        correct = torch.zeros(k, device=self.device)
        grad_sums = torch.zeros(k, len(state.monitored), device=self.device)
        # Every lane's epoch of rows in its own order, gathered at once: one large gather
        # costs a third of one small gather per step. (index_select on flat rows: advanced
        # indexing with a 2-D index is 10x slower.)
        x_epoch = self.x_all.index_select(0, orders.view(-1)).view(k, n_train, -1)
        y_epoch = self.y_all.index_select(0, orders.view(-1)).view(k, n_train)
        for step, first in enumerate(range(0, n_train, self.batch_size)):
            inputs = x_epoch[:, first:first + self.batch_size]  # [K, batch, features]
            targets = y_epoch[:, first:first + self.batch_size]  # [K, batch]
            lane_loss, logits, grad_norms = state.train_step(inputs, targets)
            if grad_norms is not None:
                grad_sums += grad_norms
            losses[:, step] = lane_loss
            correct += count_hits(logits, targets)
        seconds = time.perf_counter() - start
        losses_np = losses.cpu().numpy()
        grad_means = (grad_sums / n_steps).cpu().numpy()
        train_accuracy = (correct / n_train).tolist()
        evaluated = self._evaluate(train=any(lane.config.train_eval for lane in lanes))

        ended: list[LaneEnd] = []
        leaving: list[int] = []
        for i, lane in enumerate(lanes):
            lane.batch_losses.append(losses_np[i])
            if not np.isfinite(losses_np[i]).all():
                first_bad = int(np.argmin(np.isfinite(losses_np[i])))
                lane.reporter.save_artifact("batch_losses.npy",
                                            _npy(np.concatenate(lane.batch_losses)))
                ended.append(LaneEnd(lane.task, error=DivergedError(
                    f"loss became {losses_np[i][first_bad]} at epoch {lane.epoch} batch "
                    f"{first_bad} (lr={lane.config.lr})")))
                leaving.append(i)
                continue
            # The exercise's train metrics: running means over the epoch's batches.
            metrics = {"train_loss": float(losses_np[i].mean()),
                       "train_accuracy": train_accuracy[i], **evaluated[i]}
            if not lane.config.train_eval:
                metrics.pop("train_eval_loss", None)
                metrics.pop("train_eval_accuracy", None)
            metrics.update(epoch_seconds=seconds, iterations=float(n_steps))
            lane.ledger.add(train=n_train, seconds=seconds / k, evaluated=sum(  # its share
                x.shape[0] for x, _ in self.evals.values())
                + (n_train if lane.config.train_eval else 0))
            for layer in lane.config.monitor_layers:
                metrics[f"grad_sq_norm_layer{layer}"] = float(
                    grad_means[i, state.monitored.index(state.pack_layer(i, layer))])
            lane.reporter.report(lane.epoch, metrics)
            for key, value in metrics.items():
                lane.history.setdefault(key, []).append(value)
            lane.metrics = metrics
            lane.epoch += 1
            if lane.epoch >= lane.config.epochs or lane.reporter.should_stop():
                leaving.append(i)
                ended.append(self._finish(i, lane))
        if leaving:
            kept = [i for i in range(k) if i not in leaving]
            self._rebuild([lanes[i] for i in kept], kept=kept)
        return ended

    def _finish(self, i: int, lane: _Lane) -> LaneEnd:
        """The lane as a single ``MLP`` with its trained weights, and its artifacts."""
        assert self.state is not None
        model = self.state.extract(i, lane)
        try:
            all_losses = np.concatenate(lane.batch_losses)
            lane.reporter.save_artifact("batch_losses.npy", _npy(all_losses))
            tensors = {"test": self.evals["test"]}
            boundary = _decision_boundary(model, self.data, lane.config, tensors, self.device)
            lane.reporter.save_artifact("decision_boundary.npz", _npz(boundary))
            lane.ledger.add(evaluated=BOUNDARY_GRID ** 2)
            lane.reporter.log("compute", lane.ledger.as_dict())
            if self.runtime.draws_previews(stopped=lane.epoch < lane.config.epochs):
                _save_previews(lane.reporter, lane.history, all_losses, boundary)
        except Exception as exc:
            return LaneEnd(lane.task, error=exc)
        return LaneEnd(lane.task, metrics={key: lane.metrics[key] for key in METRICS},
                       model=model)

    @torch.no_grad()
    def _evaluate(self, train: bool) -> list[dict[str, float]]:
        """Loss and accuracy of every lane on validation and test (and, with ``train``, on
        its training rows, as ``train_eval_*``)."""
        assert self.state is not None
        k = len(self.lanes)
        out: list[dict[str, float]] = [{} for _ in range(k)]
        subsets = torch.stack([lane.subset for lane in self.lanes])
        splits = {**({"train": (subsets, None)} if train else {}), **self.evals}
        for split, (x, y) in splits.items():
            n = x.shape[-1] if split == "train" else x.shape[0]
            loss_sum = torch.zeros(k, device=self.device)
            correct = torch.zeros(k, device=self.device)
            chunk = max(1, EVAL_BATCH_SIZE // max(1, k // 4))
            for first in range(0, n, chunk):
                if split == "train":
                    rows = x[:, first:first + chunk]
                    inputs, target = self.x_all[rows], self.y_all[rows]
                else:
                    part = x[first:first + chunk]
                    inputs = part.unsqueeze(0).expand(k, *part.shape)
                    target = y[first:first + chunk].unsqueeze(0).expand(k, -1)
                logits = self.state.forward(inputs, train=False)
                loss_sum += F.cross_entropy(logits.reshape(-1, NUM_CLASSES), target.reshape(-1),
                                            reduction="none").view(k, -1).sum(1)
                correct += count_hits(logits, target)
            # One transfer per split, not one per lane (no host sync per lane on a GPU).
            name = "train_eval" if split == "train" else split
            for i, (loss, hits) in enumerate(zip(loss_sum.tolist(), correct.tolist(),
                                                 strict=True)):
                out[i][f"{name}_loss"] = loss / n
                out[i][f"{name}_accuracy"] = hits / n
        return out

    def _rebuild(self, lanes: list[_Lane], kept: list[int]) -> None:
        old, self.lanes = self.state, lanes
        self.depth = max((lane.config.depth for lane in lanes), default=0)
        self.state = (_PackState(self, lanes, old, kept) if lanes else None)


class _PackState:
    """The stacked parameters, optimizer state and BatchNorm statistics of a pack's lanes.

    Parameters live in one flat tensor, layer by layer, lane-major within a layer, so each
    layer's weight is a ``[K, in, out]`` view and the optimizer updates one tensor.
    """

    def __init__(self, pack: _Pack, lanes: list[_Lane], old: _PackState | None,
                 kept: list[int]):
        k, depth, width = len(lanes), pack.depth, pack.width
        self.pack, self.k, self.depth = pack, k, depth
        # BatchNorm blocks when any lane has BatchNorm; lanes without it bypass them.
        self.batch_norm = any(lane.config.batch_norm for lane in lanes)
        self.all_batch_norm = all(lane.config.batch_norm for lane in lanes)
        self.bn_lanes = torch.tensor([lane.config.batch_norm for lane in lanes],
                                     device=pack.device).view(k, 1, 1)
        device = pack.device
        # Shapes of the parameter blocks: per hidden layer weight, bias (and BN gamma, beta),
        # then the head.
        self.shapes: list[tuple[str, int, tuple[int, int]]] = []
        for layer in range(depth):
            fan_in = pack.in_features if layer == 0 else width
            self.shapes += [("w", layer, (fan_in, width)), ("b", layer, (1, width))]
            if self.batch_norm:
                self.shapes += [("g", layer, (1, width)), ("beta", layer, (1, width))]
        self.shapes += [("hw", HEAD, (width, NUM_CLASSES)), ("hb", HEAD, (1, NUM_CLASSES))]
        sizes = [k * a * b for _, _, (a, b) in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        total = int(self.offsets[-1])

        flat = torch.zeros(total, device=device)
        mask = torch.zeros(total, device=device)
        lane_of = torch.empty(total, dtype=torch.long, device=device)
        self.running = {layer: (torch.zeros(k, 1, width, device=device),
                                torch.ones(k, 1, width, device=device))
                        for layer in range(depth)} if self.batch_norm else {}
        for i, lane in enumerate(lanes):
            params = self._lane_params(lane)
            for block, (kind, layer, (a, b)) in enumerate(self.shapes):
                view = flat[self.offsets[block]:self.offsets[block + 1]].view(k, a, b)
                mview = mask[self.offsets[block]:self.offsets[block + 1]].view(k, a, b)
                lane_of[self.offsets[block]:self.offsets[block + 1]].view(k, a, b)[i] = i
                source = params.get((kind, layer))
                if source is not None:
                    view[i, :source.shape[0], :source.shape[1]] = source
                    mview[i, :source.shape[0], :source.shape[1]] = 1.0
        self.mask = None if bool(mask.all()) else mask
        self.lane_of = lane_of

        # Per-lane hyperparameters, as vectors over lanes.
        def vector(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        configs = [lane.config for lane in lanes]
        self.lr = vector([c.lr for c in configs])
        self.weight_decay = vector([c.weight_decay for c in configs])
        self.momentum = vector([c.momentum for c in configs])
        self.residual = vector([1.0 if c.residual else 0.0 for c in configs]).view(k, 1, 1)
        self.active = torch.tensor([[layer < c.depth for c in configs] for layer in range(depth)],
                                   device=device).view(depth, k, 1, 1)
        self.head_from = [c.depth for c in configs]
        self.steps = torch.zeros(k, device=device)
        self.counts = [0] * k  # optimizer steps per lane, as Python ints
        # Per-element copies of the per-lane values (an index per step would cost more).
        self.lr_elem = self.lr[lane_of]
        self.momentum_elem = self.momentum[lane_of]
        self.wd_elem = (self.weight_decay[lane_of] if any(c.weight_decay for c in configs)
                        else None)
        self.exp_avg = torch.zeros(total, device=device)
        self.exp_avg_sq = torch.zeros(total, device=device)
        monitored = {self.pack_layer(i, layer) for i, c in enumerate(configs)
                     for layer in c.monitor_layers}
        self.monitored = sorted(monitored)

        if old is not None and kept:  # carry the kept lanes' trained state over
            for block, (kind, layer, (a, b)) in enumerate(self.shapes):
                new = slice(self.offsets[block], self.offsets[block + 1])
                old_block = old._block_index(kind, layer)
                if old_block is None:
                    continue
                oa, ob = old.shapes[old_block][2]
                old_slice = slice(old.offsets[old_block], old.offsets[old_block + 1])
                for tensor, old_tensor in ((flat, old.flat.detach()),
                                           (self.exp_avg, old.exp_avg),
                                           (self.exp_avg_sq, old.exp_avg_sq)):
                    target = tensor[new].view(k, a, b)
                    source = old_tensor[old_slice].view(old.k, oa, ob)
                    rows, cols = min(a, oa), min(b, ob)
                    target[:len(kept), :rows, :cols] = source[kept, :rows, :cols]
            self.steps[:len(kept)] = old.steps[kept]
            self.counts[:len(kept)] = [old.counts[i] for i in kept]
            for layer in range(min(depth, old.depth)):
                if layer in self.running and layer in old.running:
                    for new_stat, old_stat in zip(self.running[layer], old.running[layer],
                                                  strict=True):
                        new_stat[:len(kept)] = old_stat[kept]
        self.flat = flat.detach().requires_grad_(True)
        self.sizes = [int(b - a) for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]
        self.any_residual = any(c.residual for c in configs)
        self.full_layers = {layer for layer in range(depth)
                            if all(layer < c.depth for c in configs)}

    def _block_index(self, kind: str, layer: int) -> int | None:
        for block, (k2, l2, _) in enumerate(self.shapes):
            if k2 == kind and l2 == layer:
                return block
        return None

    def _lane_params(self, lane: _Lane) -> dict[tuple[str, int], torch.Tensor]:
        """A lane's initial parameters (from its single-trial model) by (kind, pack layer)."""
        out: dict[tuple[str, int], torch.Tensor] = {}
        with torch.no_grad():
            for layer, block in enumerate(lane.model.blocks):
                linear = block[0]
                out[("w", layer)] = linear.weight.T.to(self.pack.device)
                out[("b", layer)] = linear.bias.view(1, -1).to(self.pack.device)
                if lane.config.batch_norm:
                    out[("g", layer)] = block[1].weight.view(1, -1).to(self.pack.device)
                    out[("beta", layer)] = block[1].bias.view(1, -1).to(self.pack.device)
            out[("hw", HEAD)] = lane.model.head.weight.T.to(self.pack.device)
            out[("hb", HEAD)] = lane.model.head.bias.view(1, -1).to(self.pack.device)
        return out

    def view(self, kind: str, layer: int) -> torch.Tensor:
        block = self._block_index(kind, layer)
        assert block is not None
        a, b = self.shapes[block][2]
        return self.flat[self.offsets[block]:self.offsets[block + 1]].view(self.k, a, b)

    def pack_layer(self, lane_index: int, layer: int) -> int:
        """A lane's Linear-layer index (negative counts from its head) as a pack layer
        (``HEAD`` for its output layer)."""
        depth = self.head_from[lane_index]
        layer = layer + depth + 1 if layer < 0 else layer
        return HEAD if layer == depth else layer

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """Logits ``[K, n, classes]`` for inputs ``[K, n, features]``."""
        # One split of the flat tensor per call: its backward writes one gradient buffer.
        views = self.views = {(kind, layer): block.view(self.k, a, b) for (kind, layer, (a, b)),
                              block in zip(self.shapes, torch.split(self.flat, self.sizes),
                                           strict=True)}
        for layer in range(self.depth):
            h = torch.baddbmm(views["b", layer], x, views["w", layer])
            if self.batch_norm:
                normed = self._batch_norm(h, layer, train)
                h = normed if self.all_batch_norm else torch.where(self.bn_lanes, normed, h)
            h = torch.relu(h)
            # Residual lanes add their input; at layer 0 only where width == in_features.
            if (layer > 0 and self.any_residual) or (layer == 0 and h.shape == x.shape):
                h = h + self.residual * x
            # Lanes shallower than the pack pass their input through the layers they lack.
            x = h if layer in self.full_layers else torch.where(self.active[layer], h, x)
        return torch.baddbmm(views["hb", HEAD], x, views["hw", HEAD])

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One optimizer step of every lane on its own batch (inputs ``[K, batch, features]``,
        targets ``[K, batch]``): each lane's loss ``[K]``, the logits, and the monitored
        layers' squared gradient norms ``[K, m]`` (None when none are monitored)."""
        logits = self.forward(inputs, train=True)
        lane_loss = F.cross_entropy(logits.reshape(-1, NUM_CLASSES), targets.reshape(-1),
                                    reduction="none").view(self.k, -1).mean(1)
        self.flat.grad = None
        lane_loss.sum().backward()  # each lane's gradient is its own loss's
        grad_norms = self.grad_norms() if self.monitored else None
        self.step()
        return lane_loss.detach(), logits.detach(), grad_norms

    def _batch_norm(self, h: torch.Tensor, layer: int, train: bool) -> torch.Tensor:
        """Each lane's BatchNorm1d over its own batch, as torch's ``batch_norm`` on the
        ``[n, K * width]`` view: every (lane, unit) pair is one channel, and the statistics
        are reduced along memory order (``h.var`` over the middle axis of ``[K, n, width]``
        was 70% of a BatchNorm pack's step). The running statistics update in place, with
        the unbiased variance, as ``nn.BatchNorm1d`` does."""
        k, n, width = h.shape
        running_mean, running_var = self.running[layer]
        channels = h.transpose(0, 1).reshape(n, k * width)
        out = F.batch_norm(channels, running_mean.view(-1), running_var.view(-1),
                           self.views["g", layer].reshape(-1),
                           self.views["beta", layer].reshape(-1),
                           training=train, momentum=BN_MOMENTUM, eps=BN_EPS)
        return out.view(n, k, width).transpose(0, 1)

    def grad_norms(self) -> torch.Tensor:
        """Each lane's squared gradient norm of each monitored layer's weight, ``[K, m]``."""
        assert self.flat.grad is not None
        norms = []
        for layer in self.monitored:
            block = self._block_index(*(("hw", HEAD) if layer == HEAD else ("w", layer)))
            assert block is not None
            a, b = self.shapes[block][2]
            grad = self.flat.grad[self.offsets[block]:self.offsets[block + 1]].view(self.k, a, b)
            norms.append(grad.pow(2).sum((1, 2)))
        return torch.stack(norms, 1)

    @torch.no_grad()
    def step(self) -> None:
        """One optimizer step for every lane (torch's Adam or SGD, lane by lane values)."""
        grad = self.flat.grad
        assert grad is not None
        if self.mask is not None:
            grad.mul_(self.mask)  # padded units stay at zero
        param = self.flat
        self.steps += 1
        self.counts = [count + 1 for count in self.counts]
        if self.wd_elem is not None:
            grad = grad.add(param * self.wd_elem)
        if self.pack.optimizer == "adam":
            beta1, beta2 = ADAM_BETAS
            self.exp_avg.lerp_(grad, 1 - beta1)
            self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            if len(set(self.counts)) == 1:  # lanes that started together: torch's scalars
                count = self.counts[0]
                denom = (self.exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** count)).add_(ADAM_EPS)
                param.addcdiv_(self.exp_avg * self.lr_elem, denom,
                               value=-1 / (1 - beta1 ** count))
            else:  # lanes that joined later have their own bias corrections
                lane_of = self.lane_of
                step_size = (self.lr / (1 - beta1 ** self.steps))[lane_of]
                correction2 = torch.sqrt(1 - beta2 ** self.steps)[lane_of]
                denom = (self.exp_avg_sq.sqrt() / correction2).add_(ADAM_EPS)
                param.sub_(step_size * self.exp_avg / denom)
        else:  # SGD with momentum; the buffer starts at zero, so step 1 takes the gradient
            buffer = self.exp_avg
            buffer.mul_(self.momentum_elem).add_(grad)
            param.sub_(self.lr_elem * buffer)
        if self.mask is not None:
            param.mul_(self.mask)

    def extract(self, i: int, lane: _Lane) -> MLP:
        """Lane ``i`` as a single ``MLP`` with its trained weights and BatchNorm statistics."""
        model = lane.model
        with torch.no_grad():
            for layer, block in enumerate(model.blocks):
                linear = block[0]
                w = self.view("w", layer)[i, :linear.in_features, :linear.out_features]
                linear.weight.copy_(w.T)
                linear.bias.copy_(self.view("b", layer)[i, 0, :linear.out_features])
                if lane.config.batch_norm:
                    bn = block[1]
                    bn.weight.copy_(self.view("g", layer)[i, 0, :bn.num_features])
                    bn.bias.copy_(self.view("beta", layer)[i, 0, :bn.num_features])
                    bn.running_mean.copy_(self.running[layer][0][i, 0, :bn.num_features])
                    bn.running_var.copy_(self.running[layer][1][i, 0, :bn.num_features])
            head = model.head
            head.weight.copy_(self.view("hw", HEAD)[i, :head.in_features, :].T)
            head.bias.copy_(self.view("hb", HEAD)[i, 0, :])
        return model.to(self.pack.device).eval()
