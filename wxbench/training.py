"""The one training loop every torch model in wxbench uses, and a base class for torch forecasters.

Why one loop: the comparison is only fair if every model gets the same optimiser conventions,
budget enforcement, early stopping and seeding. A model customises its loss, not the loop.

- AdamW; the learning rate warms up linearly over the first 5 % of the budget, then follows a
  cosine decay over the budget's progress: the furthest of steps, epochs or wall clock used. A
  model cut by the wall clock thus still ends on a small learning rate. ``schedule="constant"``
  keeps the learning rate after the warm-up instead: for a stage of a model that gets a few seconds
  (an autoencoder trained before the forecaster that uses it), where the decay halves the useful
  steps; the best weights by validation loss are restored either way.
- Validation loss on evenly spaced validation windows every tenth of the budget (in steps or in
  time, whichever comes first, but never more than a tenth of the time) and when training stops; ``budget.patience`` checks without
  improvement stop training, and the best weights are restored.
- Reproducibility: when the step or epoch limit ends training, the same seed gives bit-identical
  weights on CPU. When the wall clock binds (slow models in the ``cpu`` profile), the step count
  and schedule depend on the machine's speed; the steps done are recorded in the result.
- bf16 autocast on CUDA, fp32 on CPU.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from .data.splits import SplitData
from .interfaces import Budget, FitReport, Forecaster, GridSpec
from .nn import TeacherForcing, latitude_weighted_mse
from .progress import progress_bar

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: learning-rate schedules of train_module (after the linear warm-up)
SCHEDULES = ("cosine", "constant")

#: validation checks per budget: often enough for early stopping, rare enough to stay cheap
CHECKS_PER_BUDGET = 10


def autocast(device: str):
    """bf16 autocast on CUDA (where it speeds up matmuls and convolutions); a no-op on CPU."""
    enabled = device.startswith("cuda")
    return torch.autocast(device_type="cuda" if enabled else "cpu", dtype=torch.bfloat16, enabled=enabled)


def train_module(module: nn.Module, loss_fn: LossFn, train: SplitData, val: SplitData, budget: Budget, *,
                 device: str, seed: int, learning_rate: float, weight_decay: float,
                 parameters: list[nn.Parameter] | None = None, val_loss_fn: LossFn | None = None,
                 desc: str = "train", schedule: str = "cosine") -> FitReport:
    """Train ``module`` by minimising ``loss_fn(history, target)`` on batches of ``train`` windows.

    ``loss_fn`` runs the module itself (so models with teacher forcing, noise or several heads
    fit in). ``val_loss_fn`` (default ``loss_fn``) is evaluated in eval mode without gradients.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"train_module: unknown learning-rate schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    params = [p for p in (parameters if parameters is not None else module.parameters()) if p.requires_grad]
    if not params:
        return FitReport(seconds=0.0, stopped_because="nothing to train")
    val_loss_fn = val_loss_fn or loss_fn
    optimiser = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    val_index = val.evenly_spaced(budget.val_windows)
    steps_per_epoch = max(1, math.ceil(len(train) / budget.batch_size))
    total_steps = min(budget.max_steps, budget.max_epochs * steps_per_epoch)
    check_every = max(1, total_steps // CHECKS_PER_BUDGET)

    def validate() -> float:
        module.eval()
        total, count = 0.0, 0
        with torch.no_grad(), autocast(device):
            for i in range(0, len(val_index), budget.eval_batch_size):
                history, target = val.windows(val_index[i:i + budget.eval_batch_size])
                history, target = history.to(device), target.to(device)
                total += float(val_loss_fn(history, target)) * len(history)
                count += len(history)
        module.train()
        return total / max(count, 1)

    report = FitReport(seconds=0.0)
    best_loss, best_state, bad_checks = math.inf, None, 0
    start = time.perf_counter()
    last_check = start
    val_seconds = 0.0
    step = 0
    module.train()
    bar = progress_bar(total=total_steps, desc=desc, unit="step")
    stop = None
    while stop is None:
        for history, target in _timed_batches(train, budget.batch_size, generator, device, report):
            # wall-clock progress in whole 5 % steps; it drives the schedule (and extra validation
            # checks) only while it is ahead of the step count, so step-bound runs stay reproducible
            clock = math.floor(20 * (time.perf_counter() - start) / budget.max_seconds) / 20
            clock_binds = clock > step / total_steps
            progress = max(step / total_steps, clock)
            for group in optimiser.param_groups:
                group["lr"] = learning_rate * _schedule(progress, schedule)
            with autocast(device):
                loss = loss_fn(history, target)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step}")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)
            optimiser.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            now = time.perf_counter()
            if step >= total_steps:
                stop = "budget: steps"
            elif now - start >= budget.max_seconds:
                stop = "budget: wall clock"
            # a slow model's validation can cost as much as many training steps: keep checks to
            # at most about a tenth of the training time
            check_gap = max(budget.max_seconds / CHECKS_PER_BUDGET, 9 * val_seconds)
            timed_check = clock_binds and now - last_check >= check_gap
            if stop or step % check_every == 0 or timed_check:
                val_loss = validate()
                last_check = time.perf_counter()
                val_seconds = last_check - now
                report.val_history.append(val_loss)
                if val_loss < best_loss:
                    best_loss, bad_checks = val_loss, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    bad_checks += 1
                    if bad_checks >= budget.patience and not stop:
                        stop = "early stopping"
            if stop:
                break
    bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    report.seconds = time.perf_counter() - start
    report.steps = step
    report.epochs = step / steps_per_epoch
    report.stopped_because = stop
    report.best_val_loss = best_loss if math.isfinite(best_loss) else None
    return report


def _schedule(progress: float, kind: str = "cosine", warmup: float = 0.05) -> float:
    if progress < warmup:
        return (progress + 1e-3) / warmup
    if kind == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def _timed_batches(split: SplitData, batch_size: int, generator: torch.Generator, device: str, report: FitReport):
    """Shuffled batches, adding the time spent gathering and moving them to ``report.data_seconds``."""
    iterator = split.batches(batch_size, shuffle=True, generator=generator, device=device)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        report.data_seconds += time.perf_counter() - t0
        yield batch


class TorchForecaster(Forecaster):
    """Base for neural forecasters whose ``nn.Module`` maps (B, 12, C, H, W) -> (B, 4, C, H, W).

    Subclasses implement ``build()``; they may override ``loss`` (default: latitude-weighted MSE on
    normalised fields, ``wxbench.nn.latitude_weighted_mse``, the training analogue of the
    latitude-weighted RMSE the harness scores). Layers for ``build()`` are in ``wxbench.nn``.
    """

    hyperparameters: ClassVar[Mapping[str, Any]] = {"learning_rate": 1e-3, "weight_decay": 1e-4}

    def __init__(self, grid: GridSpec, *, device: str = "cpu", seed: int = 0, ensemble_size: int = 1,
                 **hparams: Any) -> None:
        super().__init__(grid, device=device, seed=seed, ensemble_size=ensemble_size, **hparams)
        from .metrics import latitude_weights

        torch.manual_seed(seed)  # deterministic initial weights
        self.module = self.build().to(device)
        self.lat_weights = latitude_weights(torch.tensor(grid.lat)).float().to(device)

    def build(self) -> nn.Module:
        raise NotImplementedError

    def loss(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return latitude_weighted_mse(self.module(history), target, self.lat_weights)

    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        return train_module(self.module, self.loss, train, val, budget, device=self.device, seed=self.seed,
                            learning_rate=self.hparams["learning_rate"],
                            weight_decay=self.hparams["weight_decay"], desc=self.name)

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        with torch.no_grad(), autocast(self.device):
            return self.module(history.to(self.device)).float()

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])

    def describe(self) -> dict[str, Any]:
        return {"parameters": count_parameters(self.module)}


class TeacherForcedForecaster(TorchForecaster):
    """A TorchForecaster whose module decodes autoregressively and can be teacher-forced: it is
    called as ``module(history, target, teacher_forcing)``, where ``teacher_forcing`` is
    :meth:`wxbench.nn.TeacherForcing.schedule`'s list (or None). Subclasses declare a
    ``teacher_forcing_ratio`` hyperparameter; the generator of the draws is saved with the weights.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher_forcing = TeacherForcing(self.hparams["teacher_forcing_ratio"], self.seed, model=self.name)

    def teacher_forcing_schedule(self) -> list[bool] | None:
        """Which decoder steps are teacher-forced in this training batch (None: none)."""
        return self.teacher_forcing.schedule(self.grid.output_steps, self.module.training)

    def loss(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        forecast = self.module(history, target, self.teacher_forcing_schedule())
        return latitude_weighted_mse(forecast, target, self.lat_weights)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "tf_generator": self.teacher_forcing.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        if "tf_generator" in state:
            self.teacher_forcing.set_state(state["tf_generator"])


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
