"""The two plugin interfaces, Forecaster and Encoder, and the small value types they exchange.

Contract (tensor plus coordinates, as in earth2studio): every tensor a model sees or returns is
normalised (z-score or min-max, as the model declares) and laid out as

    history   (B, input_steps=12, C, H=32, W=64)
    forecast  (B, output_steps=4, C, H, W)         deterministic
              (B, E, output_steps, C, H, W)        ensemble of E members (``probabilistic = True``)

with the coordinates in a :class:`GridSpec`: channel names, latitudes ascending in degrees, longitudes
in degrees, the 6 h step. A forecast is any floating dtype (float32 normally; bfloat16 or float16
from autocast is promoted to float32 before scoring) and finite (:func:`check_forecast`, which the
runner and the conformance checks both apply). The harness inverts the normalisation before scoring, so models never see
physical units unless they ask the normaliser.
"""

from __future__ import annotations

import abc
import difflib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping

from .errors import ConfigError, ContractViolation

if TYPE_CHECKING:  # torch is imported lazily: `wxbench plugins` must not pay for it
    import numpy as np
    import torch

    from .data.splits import SplitData

Normalisation = Literal["zscore", "minmax"]


@dataclass(frozen=True)
class GridSpec:
    """Coordinates of the tensors a model exchanges with the harness."""

    channels: tuple[str, ...]
    lat: tuple[float, ...]
    lon: tuple[float, ...]
    input_steps: int = 12
    output_steps: int = 4
    step_hours: int = 6

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W): latitudes by longitudes."""
        return len(self.lat), len(self.lon)

    @property
    def lead_hours(self) -> list[int]:
        return [self.step_hours * (i + 1) for i in range(self.output_steps)]


@dataclass(frozen=True)
class Budget:
    """How much training a run profile allows each model; the same for every model in a profile.

    Training stops at whichever limit comes first. ``ensemble_size`` is the number of members a
    probabilistic model returns at evaluation.
    """

    max_epochs: int
    max_steps: int
    max_seconds: float
    batch_size: int
    eval_batch_size: int
    ensemble_size: int
    patience: int = 5  # validation checks without improvement before early stopping
    val_windows: int = 256  # validation windows used for each early-stopping check

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitReport:
    """What a fit did: returned by ``fit`` and stored in the result file."""

    seconds: float
    steps: int = 0
    epochs: float = 0.0
    stopped_because: str = "done"
    best_val_loss: float | None = None
    val_history: list[float] = field(default_factory=list)
    data_seconds: float = 0.0  # time spent gathering batches and moving them to the device
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Configurable:
    """Hyperparameter handling shared by forecasters and encoders."""

    name: ClassVar[str]
    #: hyperparameter defaults; every key is an option a user may set and is recorded in the result
    hyperparameters: ClassVar[Mapping[str, Any]] = {}
    #: per run profile, overrides of the defaults (e.g. a smaller model for ``smoke``)
    profile_hyperparameters: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    @classmethod
    def check_hyperparameters(cls, keys: Any, name: str | None = None) -> None:
        """Raise ConfigError naming the model and every key it does not declare, with a did-you-mean
        hint (the CLI calls it for ``-H`` before any work; the constructor calls it again)."""
        unknown = sorted(set(keys) - set(cls.hyperparameters))
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, list(cls.hyperparameters), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(
                f"{cls.__name__} {name or getattr(cls, 'name', '?')!r}: unknown hyperparameter(s) "
                f"{', '.join(hints)}; known: {', '.join(sorted(cls.hyperparameters))}"
            )

    def __init__(self, grid: GridSpec, *, device: str = "cpu", seed: int = 0, **hparams: Any) -> None:
        self.check_hyperparameters(hparams, getattr(self, "name", None))
        self.grid = grid
        self.device = device
        self.seed = seed
        self.hparams: dict[str, Any] = {**self.hyperparameters, **hparams}
        #: which weights the model was built from; plugins with pretrained weights overwrite it
        self.weights: str = "trained from scratch"

    def describe(self) -> dict[str, Any]:
        """Extra facts recorded in the result (parameter count, weights, reconstruction floor, ...)."""
        return {}


class Forecaster(_Configurable, abc.ABC):
    """A model that maps 12 past states to the next 4 (or an ensemble of such forecasts).

    Subclasses set the class attributes and implement ``fit`` and ``predict``. The harness
    constructs them as ``cls(grid, device=..., seed=..., ensemble_size=..., **hyperparameters)``.
    """

    name: ClassVar[str]
    family: ClassVar[str] = "other"
    normalisation: ClassVar[Normalisation] = "zscore"
    probabilistic: ClassVar[bool] = False
    #: opt-in for models that depend on the calendar (a climatology): True makes the harness call
    #: ``predict(history, init_times=...)`` with each window's initialisation time, a ``(B,)`` datetime64[ns]
    #: array (the valid time of lead ``l`` is ``init_times + (l + 1) * grid.step_hours`` hours); False (the
    #: default) calls ``predict(history)``. Either way through :func:`predict_batch`.
    needs_init_times: ClassVar[bool] = False

    def __init__(self, grid: GridSpec, *, device: str = "cpu", seed: int = 0, ensemble_size: int = 1,
                 **hparams: Any) -> None:
        super().__init__(grid, device=device, seed=seed, **hparams)
        self.ensemble_size = ensemble_size if self.probabilistic else 1

    @abc.abstractmethod
    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        """Train on ``train`` (early-stop on ``val``) within ``budget``."""

    @abc.abstractmethod
    def predict(self, history: torch.Tensor) -> torch.Tensor:
        """(B, 12, C, H, W) normalised -> (B, 4, C, H, W), or (B, E, 4, C, H, W) when probabilistic.

        A model with ``needs_init_times = True`` is called ``predict(history, init_times=...)`` instead."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to re-score the trained model without retraining (torch.save-able)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of ``state_dict``."""


class Encoder(_Configurable, abc.ABC):
    """Maps single fields to a latent space and back. Inputs are min-max scaled to [-1, 1].

    fields (B, C, H, W) --encode--> latent (B, *latent_shape) --decode--> fields (B, C, H, W)
    """

    name: ClassVar[str]
    family: ClassVar[str] = "encoder"
    normalisation: ClassVar[Normalisation] = "minmax"

    @abc.abstractmethod
    def encode(self, fields: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def latent_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
        """Latent shape (without batch) for an input of shape (C, H, W)."""

    @property
    @abc.abstractmethod
    def trainable(self) -> dict[str, bool]:
        """Which parts are trained on weather data, e.g. {"encoder": False, "decoder": True}."""

    @abc.abstractmethod
    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        """Train (or fine-tune) the trainable parts on reconstruction of single fields."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def predict_batch(model: Forecaster, history: torch.Tensor, init_times: np.ndarray) -> Any:
    """``model``'s forecast for ``history``, passing the windows' ``init_times`` (``(B,)`` datetime64[ns]) only
    to a model that asks for them (:attr:`Forecaster.needs_init_times`): the one way the harness calls predict."""
    if model.needs_init_times:
        return model.predict(history, init_times=init_times)
    return model.predict(history)


def check_forecast(output: Any, history: torch.Tensor, model: Forecaster, who: str) -> torch.Tensor:
    """The contract every forecast must meet (shape, floating dtype, finite values); returns it as
    float32. A violation raises :class:`~wxbench.errors.ContractViolation` naming ``who``."""
    import torch

    if not isinstance(output, torch.Tensor):
        raise ContractViolation(f"{who}: predict returned {type(output).__name__}, expected a torch.Tensor")
    b, _, c, h, w = history.shape
    lead = model.grid.output_steps
    expected = (b, model.ensemble_size, lead, c, h, w) if model.probabilistic else (b, lead, c, h, w)
    if tuple(output.shape) != expected:
        raise ContractViolation(f"{who}: predict returned shape {tuple(output.shape)}, expected {expected}"
                                + (" (B, E, 4, C, H, W)" if model.probabilistic else " (B, 4, C, H, W)"))
    if not output.dtype.is_floating_point:
        raise ContractViolation(f"{who}: predict returned dtype {output.dtype}, expected a floating dtype")
    if not torch.isfinite(output).all():
        bad = int((~torch.isfinite(output)).sum())
        raise ContractViolation(f"{who}: predict returned {bad} non-finite values (NaN or inf)")
    return output.float()
