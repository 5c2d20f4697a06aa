"""Forecast scores in physical units: latitude weights, per-point CRPS, and a streaming accumulator.

Conventions (the formulas and their references are in docs/protocol.md, Metrics):

* Tensors are torch tensors on any device.  A deterministic forecast has shape
  ``(B, L, C, H, W)`` (batch/sample, lead time, channel, latitude, longitude), an ensemble forecast
  ``(B, E, L, C, H, W)`` and the target (verifying analysis) ``(B, L, C, H, W)``.
* Latitude weights are ``w(lat) = cos(lat) / mean(cos(lat))``, so a weighted spatial mean is
  simply ``mean_over_lat_lon(w * x)``.
* Every score of :class:`ScoreAccumulator` is first reduced over space for each sample (one
  forecast initialisation) and then averaged over samples, with every sample counting once,
  whatever the batch it came in.  Sums are accumulated in float64.
* RMSE follows WeatherBench 1 and 2: ``sqrt(mean_over_time(mean_over_lat_lon(w * (f - o)^2)))``,
  with the square root taken *after* the time (sample) mean.  ClimateLearn and ClimaX take the
  root per sample and then average; that variant gives smaller numbers and is not computed here.

CRPS of an ensemble ``x_1..x_M`` against an observation ``y``::

    standard (empirical CDF, properscoring): mean_i |x_i - y| - 1/(2 M^2)     sum_ij |x_i - x_j|
    fair (unbiased in M, WB2's headline):    mean_i |x_i - y| - 1/(2 M (M-1)) sum_ij |x_i - x_j|

The double sum is evaluated in O(M log M) from the sorted members,
``sum_ij |x_i - x_j| = 2 sum_i (2i - M - 1) x_(i)`` (i from 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "latitude_weights",
    "fair_crps",
    "standard_crps",
    "ScoreAccumulator",
]

_FLOAT64 = torch.float64
# ScoreAccumulator.update scores this many forecast values at a time on CPU (1 MB of float32 per
# temporary: small enough for the cache, large enough for two threads to share each operation)
_CHUNK_ELEMENTS = 1 << 18
# torch.compiler.is_compiling appeared in torch 2.3; the project allows torch >= 2.2
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)


def _as_float64_tensor(x: torch.Tensor | np.ndarray | Sequence[float]) -> torch.Tensor:
    """A float64 tensor from a tensor (keeps its device; CPU for MPS) or any array-like."""
    if isinstance(x, torch.Tensor):
        if x.device.type == "mps":  # MPS has no float64
            x = x.cpu()
        return x.to(_FLOAT64)
    # ascontiguousarray: torch cannot wrap NumPy arrays with negative strides (e.g. lat[::-1])
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float64)))


# ---------------------------------------------------------------------------------------------
# Latitude weights
# ---------------------------------------------------------------------------------------------


def latitude_weights(lat_degrees: torch.Tensor | np.ndarray | Sequence[float]) -> torch.Tensor:
    """Latitude weights ``cos(lat) / mean(cos(lat))`` as a float64 tensor of shape ``(H,)``.

    ``lat_degrees`` is a 1-D array of latitudes in degrees (any order).  A torch input keeps its
    device; anything else gives a CPU tensor.  The weights have mean 1, so
    ``mean(w[:, None] * x)`` over ``(lat, lon)`` is the area-weighted mean of ``x``.
    """
    lat = _as_float64_tensor(lat_degrees)
    if lat.ndim != 1 or lat.numel() == 0:
        raise ValueError(
            f"latitude_weights: expected a non-empty 1-D array of latitudes in degrees, "
            f"got shape {tuple(lat.shape)}"
        )
    if not bool(torch.isfinite(lat).all()) or bool((lat.abs() > 90).any()):
        raise ValueError("latitude_weights: latitudes must be finite and within [-90, 90] degrees")
    cos = torch.cos(torch.deg2rad(lat))
    mean = cos.mean()
    if not bool(mean > 0):
        raise ValueError("latitude_weights: mean cos(latitude) is zero (only polar latitudes?)")
    return cos / mean


# ---------------------------------------------------------------------------------------------
# Per-point CRPS
# ---------------------------------------------------------------------------------------------


def _sort_last_dim_(x: torch.Tensor) -> torch.Tensor:
    """Sort ``x`` along its last dimension; ``x`` must be a freshly made temporary (may be reused).

    On CPU, without autograd and outside ``torch.compile``, the sort runs in place through NumPy,
    whose vectorised (x86-simd-sort) sort of short float rows is several times faster than
    ``torch.sort`` on CPU.  Everywhere else (GPU, autograd, compile) ``torch.sort`` is used.
    """
    if (
        x.device.type == "cpu"
        and not x.requires_grad
        and x.dtype in (torch.float32, torch.float64)
        and x.is_contiguous()
        and type(x) is torch.Tensor
        and not _is_compiling()
    ):
        try:
            view = x.numpy()
        except (RuntimeError, TypeError):  # functorch wrappers, inference tensors in odd modes
            pass
        else:
            view.sort(axis=-1)
            return x
    return torch.sort(x, dim=-1).values


def _crps_terms(
    ensemble: torch.Tensor, target: torch.Tensor, member_dim: int, name: str
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Return ``(mean_i |x_i - y|, sum_i (2i - M - 1) x_(i), M)`` per point.

    The second term equals ``0.5 * sum_ij |x_i - x_j|``.  Both are computed from the departures
    ``d_i = x_i - y`` (sorting is shift-invariant), which keeps float32 accurate for fields with
    a large offset such as geopotential (~5e4 m2/s2).
    """
    if not isinstance(ensemble, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"{name}: ensemble and target must be torch tensors")
    if ensemble.ndim < 1:
        raise ValueError(f"{name}: ensemble must have a member dimension, got a scalar")
    ndim = ensemble.ndim
    if not -ndim <= member_dim < ndim:
        raise ValueError(
            f"{name}: member_dim={member_dim} is out of range for an ensemble of shape "
            f"{tuple(ensemble.shape)}"
        )
    member_dim %= ndim
    if target.ndim != ndim - 1:
        raise ValueError(
            f"{name}: target must have the ensemble's shape without the member dimension "
            f"(ensemble {tuple(ensemble.shape)}, member_dim={member_dim}), got "
            f"{tuple(target.shape)}"
        )
    m = ensemble.shape[member_dim]
    if m == 0:
        raise ValueError(f"{name}: the ensemble has no members (member_dim={member_dim})")
    dtype = torch.promote_types(ensemble.dtype, target.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    # Departures d_i = x_i - y with the members moved to the last dim, made contiguous in the
    # same pass as the subtraction (a separate transpose copy costs as much as the sort).
    members_last = ensemble.movedim(member_dim, -1)
    obs = target.to(device=ensemble.device).unsqueeze(-1)
    try:
        shape = torch.broadcast_shapes(members_last.shape, obs.shape)
    except RuntimeError as exc:
        raise ValueError(
            f"{name}: target of shape {tuple(target.shape)} does not match the ensemble of shape "
            f"{tuple(ensemble.shape)} (member_dim={member_dim})"
        ) from exc
    autograd = torch.is_grad_enabled() and (ensemble.requires_grad or target.requires_grad)
    departures = None
    if not autograd:
        departures = torch.empty(shape, dtype=dtype, device=ensemble.device)
        try:
            torch.sub(members_last, obs, out=departures)
        except RuntimeError:  # out= unsupported (e.g. under torch.func.vmap)
            departures = None
    if departures is None:
        departures = (members_last.to(dtype) - obs.to(dtype)).contiguous()
    ranked = _sort_last_dim_(departures)
    # Reductions over the short member dim as matrix-vector products: much faster on CPU than
    # .sum(-1) over a last dim of ~50 elements.
    # (2i - M - 1) for i = 1..M  ->  1 - M, 3 - M, ..., M - 1
    coeff = torch.arange(1 - m, m, 2, dtype=ranked.dtype, device=ranked.device)
    half_pair_sum = ranked @ coeff
    ones = torch.full((m,), 1.0 / m, dtype=ranked.dtype, device=ranked.device)
    # without autograd, |d| in place in our own temporary (saves allocating another ensemble)
    skill = (ranked.abs() if autograd else ranked.abs_()) @ ones
    return skill, half_pair_sum, m


def fair_crps(ensemble: torch.Tensor, target: torch.Tensor, member_dim: int = 1) -> torch.Tensor:
    """Fair (ensemble-size-unbiased) CRPS at every point.

    ``mean_i |x_i - y| - 1/(2 M (M-1)) sum_ij |x_i - x_j|``, what WeatherBench 2 reports and what
    ``scores.probability.crps_for_ensemble(..., method="fair")`` computes.  Its expectation over
    ensembles of ``M`` independent draws from ``F`` equals the CRPS of ``F`` itself, for any
    ``M >= 2``.

    Args:
        ensemble: members along ``member_dim``, e.g. ``(B, E, L, C, H, W)`` with ``member_dim=1``.
        target: the ensemble's shape without ``member_dim`` (broadcastable to it).
        member_dim: the member dimension of ``ensemble``.

    Returns:
        The CRPS per point, with the ensemble's shape minus ``member_dim``, in the promoted
        floating dtype of the inputs (float32 stays float32).  Differentiable (uses
        ``torch.sort`` when autograd is on).  NaNs propagate.

    Raises:
        ValueError: for a single member (``M = 1``): the fair CRPS divides by ``M - 1`` and is
            undefined; use :func:`standard_crps` (which equals the absolute error) instead.
    """
    if isinstance(ensemble, torch.Tensor) and ensemble.ndim >= 1:
        dim = member_dim % ensemble.ndim if -ensemble.ndim <= member_dim < ensemble.ndim else None
        if dim is not None and ensemble.shape[dim] == 1:
            raise ValueError(
                "fair_crps: the fair CRPS is undefined for a single ensemble member (M = 1): "
                "its spread term divides by M - 1. Use standard_crps, which equals the "
                "absolute error for M = 1, or pass at least 2 members."
            )
    skill, half_pair_sum, m = _crps_terms(ensemble, target, member_dim, "fair_crps")
    return skill - half_pair_sum / (m * (m - 1))


def standard_crps(
    ensemble: torch.Tensor, target: torch.Tensor, member_dim: int = 1
) -> torch.Tensor:
    """Standard CRPS of the ensemble's empirical CDF at every point.

    ``mean_i |x_i - y| - 1/(2 M^2) sum_ij |x_i - x_j|``, what ``properscoring.crps_ensemble``
    computes.  Biased high for small ``M`` (by ``E|X - X'| / (2M)``).  For ``M = 1`` it equals the
    absolute error ``|x - y|``.  Arguments and return value as for :func:`fair_crps`.
    """
    skill, half_pair_sum, m = _crps_terms(ensemble, target, member_dim, "standard_crps")
    return skill - half_pair_sum / (m * m)


# ---------------------------------------------------------------------------------------------
# Streaming accumulator
# ---------------------------------------------------------------------------------------------


def _weighted_grid_sum(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Latitude-weighted sum of (..., H, W) over the grid, float64 (...); ``weights`` (H,) float64.

    Each row of W values is summed at x's precision (the weight is constant along a row, so it
    applies to the row's sum: no weighted copy of the field), then the H row sums in float64.
    ``x.sum(dtype=float64)`` would first copy all of x to float64 (a fifth of the scoring time);
    a row of 64 float32 values sums to ~1e-7 relative.
    """
    return x.sum(dim=-1).to(_FLOAT64) @ weights


class _Anomaly:
    """A climatology ready for subtraction at the precision of the fields it is subtracted from.

    A float64 climatology is also held as a float32 pair ``hi + lo``: a float32 truth minus ``hi`` is
    exact where the two are close, so the anomaly keeps float64's accuracy in float32 work. A float32
    climatology (what the runner passes) is subtracted as it is.
    """

    def __init__(self, full: torch.Tensor, hi: torch.Tensor, lo: torch.Tensor | None) -> None:
        self.full, self.hi, self.lo = full, hi, lo

    @classmethod
    def of(cls, clim: torch.Tensor) -> _Anomaly:
        if clim.dtype == _FLOAT64:
            hi = clim.float()
            return cls(clim, hi, (clim - hi.double()).float())
        clim = clim.to(torch.promote_types(clim.dtype, torch.float32))
        return cls(clim, clim, None)

    def samples(self, start: int, stop: int) -> _Anomaly:
        """Samples ``start:stop`` of a per-sample climatology (B, ...); a broadcast one (1, ...) as it is."""
        if self.full.shape[0] == 1:
            return self
        lo = self.lo[start:stop] if self.lo is not None else None
        return _Anomaly(self.full[start:stop], self.hi[start:stop], lo)

    def subtract_from(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` minus the climatology, at x's precision (at least float32)."""
        if x.dtype == _FLOAT64:
            return x - self.full
        return x - self.hi if self.lo is None else (x - self.hi) - self.lo


class ScoreAccumulator:
    """Accumulate latitude-weighted scores per channel and lead time over batches of samples.

    Args:
        lat: latitudes in degrees, length ``H`` (the order of the forecast's latitude axis).
        channels: channel names, length ``C`` (the order of the channel axis).
        lead_hours: lead times in hours, length ``L`` (the order of the lead axis).
        climatology: optional fixed climatology in physical units, ``(C, H, W)`` or
            ``(L, C, H, W)`` (the same for every sample); or give each batch its own to
            :meth:`update` (the climatology at every sample's valid times, as the runner does).
            Either is needed for ``acc``.

    Call :meth:`update` with each batch and :meth:`compute` at the end.  Only float64 sums of
    shape ``(L, C)`` are kept (on the first forecast's device; on CPU for MPS, which lacks
    float64), never the forecasts.  Batches may differ in size: every sample counts once.

    Metrics returned by :meth:`compute` (``metric -> channel -> [value per lead]``), where
    ``mean_s`` is the mean over samples and ``<x>`` the latitude-weighted spatial mean
    ``mean_over_lat_lon(w * x)`` of one sample:

    * ``rmse`` = ``sqrt(mean_s <(f - o)^2>)`` (WB1/WB2: root after the sample mean).  Not the
      ClimateLearn/ClimaX variant ``mean_s sqrt(<(f - o)^2>)``, which roots per sample.
    * ``mae`` = ``mean_s <|f - o|>``; ``bias`` = ``mean_s <f - o>``.
    * ``acc`` (only with a climatology): with anomalies ``f' = f - clim``, ``o' = o - clim``, per
      sample ``sum(w f' o') / sqrt(sum(w f'^2) sum(w o'^2))`` over the grid, then ``mean_s``.
      This is WeatherBench 2's ``ACC`` (uncentred, per time, then time-averaged).  WeatherBench
      1's ``compute_weighted_acc`` differs: it subtracts the global mean anomaly (centred) and
      pools all times into one correlation.  A sample whose forecast or observed anomaly is zero
      everywhere gives NaN (0/0), which then propagates to the mean.
    * ``crps``: for an ensemble the fair CRPS (headline, as WB2), ``mean_s <fair_crps>``; for a
      deterministic forecast the CRPS of a one-member ensemble, which is exactly the MAE (check
      :attr:`is_ensemble` to tell the two apart).
    * Ensemble only (``M`` members): ``crps_standard`` (``mean_s <standard_crps>``, the
      properscoring estimator); ``ensemble_mean_rmse`` (same as ``rmse``, named explicitly);
      ``ensemble_mean_rmse_debiased`` = ``sqrt(mean_s <(mean_m f - o)^2 - var / M>)``, the root
      of WB2's ``DebiasedEnsembleMeanMSE`` (unbiased for the infinite-ensemble mean's MSE; NaN
      when the estimate is negative); ``spread`` = ``sqrt(mean_s <var>)`` with the unbiased
      member variance (``ddof=1``); ``spread_skill`` = ``spread / ensemble_mean_rmse``, the raw
      ratio as WB2's code computes it (a perfectly reliable ensemble scores
      ``sqrt(M / (M + 1))``); and ``spread_skill_corrected`` = ``sqrt((M + 1) / M) *
      spread_skill`` (Fortin et al. 2014), for which 1 means calibrated at any ``M``.

    For an ensemble, ``rmse``, ``mae``, ``bias`` and ``acc`` are scores of the ensemble mean.
    NaNs in the inputs propagate to the affected scores.
    """

    def __init__(
        self,
        lat: torch.Tensor | np.ndarray | Sequence[float],
        channels: Sequence[str],
        lead_hours: Sequence[int],
        climatology: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        self._weights = latitude_weights(lat).cpu().to(_FLOAT64)
        self.channels: tuple[str, ...] = tuple(str(c) for c in channels)
        self.lead_hours: tuple[int, ...] = tuple(int(h) for h in lead_hours)
        if not self.channels:
            raise ValueError("ScoreAccumulator: channels must not be empty")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"ScoreAccumulator: duplicate channel names in {self.channels}")
        if not self.lead_hours:
            raise ValueError("ScoreAccumulator: lead_hours must not be empty")
        n_lead, n_chan, n_lat = len(self.lead_hours), len(self.channels), self._weights.numel()
        self._clim: torch.Tensor | None = None
        if climatology is not None:
            clim = _as_float64_tensor(climatology)
            clim_shape = tuple(clim.shape)
            if clim.ndim == 3:
                clim = clim.unsqueeze(0)  # (1, C, H, W): same for every lead
            if clim.ndim != 4 or clim.shape[0] not in (1, n_lead) or tuple(clim.shape[1:3]) != (
                n_chan,
                n_lat,
            ):
                raise ValueError(
                    f"ScoreAccumulator: climatology must have shape (C, H, W) = "
                    f"({n_chan}, {n_lat}, W) or (L, C, H, W) = ({n_lead}, {n_chan}, {n_lat}, W), "
                    f"got {clim_shape}"
                )
            self._clim = clim
        self.reset()

    # -- state ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all accumulated samples (the configuration is kept)."""
        self._device: torch.device | None = None
        self._n_lon: int | None = None
        self._is_ensemble: bool | None = None
        self._ensemble_size: int | None = None
        self._n_samples = 0
        self._sums: dict[str, torch.Tensor] = {}
        self._w_dev: torch.Tensor | None = None
        self._clim_dev: _Anomaly | None = None  # the fixed climatology on the sums' device
        self._clim_per_batch: bool | None = None  # whether the batches bring their own climatology

    @property
    def is_ensemble(self) -> bool | None:
        """True for ensemble forecasts, False for deterministic, None before the first update."""
        return self._is_ensemble

    @property
    def ensemble_size(self) -> int | None:
        """Number of members ``E`` for ensembles, 1 for deterministic, None before any update."""
        return self._ensemble_size

    @property
    def n_samples(self) -> int:
        """Number of samples (forecast initialisations) accumulated so far."""
        return self._n_samples

    # -- update --------------------------------------------------------------------------------

    def _check_shapes(self, forecast: torch.Tensor, target: torch.Tensor) -> bool:
        if not isinstance(forecast, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError("ScoreAccumulator.update: forecast and target must be torch tensors")
        if forecast.ndim == 5:
            is_ens = False
        elif forecast.ndim == 6:
            is_ens = True
        else:
            raise ValueError(
                "ScoreAccumulator.update: forecast must be (B, L, C, H, W) (deterministic) or "
                f"(B, E, L, C, H, W) (ensemble), got shape {tuple(forecast.shape)}"
            )
        if target.ndim != 5:
            raise ValueError(
                f"ScoreAccumulator.update: target must be (B, L, C, H, W), got shape "
                f"{tuple(target.shape)}"
            )
        n_lat = self._weights.numel()
        expected = (len(self.lead_hours), len(self.channels), n_lat)
        if tuple(target.shape[1:4]) != expected:
            raise ValueError(
                f"ScoreAccumulator.update: target shape {tuple(target.shape)} does not match "
                f"(B, L={expected[0]}, C={expected[1]}, H={expected[2]}, W) from lead_hours, "
                f"channels and lat"
            )
        core = tuple(forecast.shape[2:]) if is_ens else tuple(forecast.shape[1:])
        if forecast.shape[0] != target.shape[0] or core != tuple(target.shape[1:]):
            kind = "(B, E, L, C, H, W)" if is_ens else "(B, L, C, H, W)"
            raise ValueError(
                f"ScoreAccumulator.update: forecast {kind} of shape {tuple(forecast.shape)} does "
                f"not match target of shape {tuple(target.shape)}"
            )
        if not forecast.dtype.is_floating_point or not target.dtype.is_floating_point:
            raise TypeError(
                f"ScoreAccumulator.update: forecast and target must be floating point, got "
                f"{forecast.dtype} and {target.dtype}"
            )
        n_lon = target.shape[-1]
        if self._clim is not None and self._clim.shape[-1] != n_lon:
            raise ValueError(
                f"ScoreAccumulator.update: climatology has {self._clim.shape[-1]} longitudes, "
                f"the forecast has {n_lon}"
            )
        if self._n_lon is not None and n_lon != self._n_lon:
            raise ValueError(
                f"ScoreAccumulator.update: this batch has {n_lon} longitudes, earlier batches "
                f"had {self._n_lon}"
            )
        if is_ens:
            members = forecast.shape[1]
            if members < 2:
                raise ValueError(
                    "ScoreAccumulator.update: an ensemble forecast needs at least 2 members "
                    "(fair CRPS and the member variance are undefined for 1); pass a "
                    "deterministic (B, L, C, H, W) forecast instead"
                )
        else:
            members = 1
        if self._is_ensemble is not None:
            if is_ens != self._is_ensemble:
                was = "ensemble" if self._is_ensemble else "deterministic"
                now = "ensemble" if is_ens else "deterministic"
                raise ValueError(
                    f"ScoreAccumulator.update: got a {now} forecast after {was} ones; one "
                    "accumulator scores one kind of forecast (call reset() or use another)"
                )
            if members != self._ensemble_size:
                raise ValueError(
                    f"ScoreAccumulator.update: this batch has {members} ensemble members, "
                    f"earlier batches had {self._ensemble_size}"
                )
        return is_ens

    def _wmean(self, x: torch.Tensor) -> torch.Tensor:
        """Latitude-weighted spatial mean over the last two dims, summed over the batch dim (float64)."""
        assert self._w_dev is not None
        return _weighted_grid_sum(x, self._w_dev).sum(dim=0) / (x.shape[-2] * x.shape[-1])

    def _batch_climatology(self, climatology: torch.Tensor | None, target: torch.Tensor) -> _Anomaly | None:
        """The climatology this batch is scored against (the fixed one or the batch's own), or None."""
        if climatology is None:
            if self._clim_per_batch:
                raise ValueError("ScoreAccumulator.update: earlier batches came with a climatology, this one "
                                 "without; give every batch its own (for acc) or none")
            return self._clim_dev
        if self._clim is not None:
            raise ValueError("ScoreAccumulator.update: a climatology per batch and one fixed at construction; "
                             "give one or the other")
        if self._clim_per_batch is False:
            raise ValueError("ScoreAccumulator.update: this batch comes with a climatology, earlier ones "
                             "without; give every batch its own (for acc) or none")
        if not isinstance(climatology, torch.Tensor) or not climatology.dtype.is_floating_point:
            raise TypeError("ScoreAccumulator.update: climatology must be a floating-point torch tensor")
        b, n_lead, n_chan, n_lat, n_lon = target.shape
        shape = tuple(climatology.shape)
        if (len(shape) != 5 or shape[0] not in (1, b) or shape[1] not in (1, n_lead)
                or shape[2:] != (n_chan, n_lat, n_lon)):
            raise ValueError(f"ScoreAccumulator.update: climatology must be (B, L, C, H, W) = "
                             f"({b}, {n_lead}, {n_chan}, {n_lat}, {n_lon}) (B or L may be 1), got {shape}")
        return _Anomaly.of(climatology.to(self._device))

    def _add(self, name: str, value: torch.Tensor) -> None:
        if name in self._sums:
            self._sums[name] += value
        else:
            self._sums[name] = value.clone()

    @torch.no_grad()
    def update(self, forecast: torch.Tensor, target: torch.Tensor,
               climatology: torch.Tensor | None = None) -> None:
        """Add a batch: ``forecast`` ``(B, L, C, H, W)`` or ``(B, E, L, C, H, W)``, ``target``
        ``(B, L, C, H, W)``, both in physical units; ``climatology``: this batch's climatology in
        physical units, ``(B, L, C, H, W)`` (each sample's at each lead's valid time; B or L may be
        1 to broadcast), for ``acc`` when the accumulator has no fixed one. A float32 climatology is
        subtracted in float32, a float64 one keeps float64's accuracy (as a float32 pair).

        The first update fixes the kind (deterministic or ensemble), the ensemble size, the
        number of longitudes, whether batches bring a climatology, and the device the sums live on;
        later batches must agree (they are moved to that device).  Raises ``ValueError``/``TypeError``
        on any mismatch.
        """
        is_ens = self._check_shapes(forecast, target)
        if target.shape[0] == 0:
            return
        if self._device is None:
            device = forecast.device
            if device.type == "mps":
                device = torch.device("cpu")
            self._device = device
            self._w_dev = self._weights.to(device)
            if self._clim is not None:
                self._clim_dev = _Anomaly.of(self._clim.to(device).unsqueeze(0))  # (1, 1|L, C, H, W)
            self._is_ensemble = is_ens
            self._ensemble_size = forecast.shape[1] if is_ens else 1
            self._n_lon = target.shape[-1]
        clim = self._batch_climatology(climatology, target)
        if self._clim is None:
            self._clim_per_batch = clim is not None
        # On CPU, score in chunks of samples small enough for the cache: whole-batch
        # temporaries made scoring cost a fifth of a small model's forward pass, mostly in memory
        # traffic.  A GPU takes the whole batch at once.  The chunks return row sums; the float64
        # work on them is done once per batch (per-chunk small operations cost as much again).
        chunk = target.shape[0]
        if self._device.type == "cpu":
            chunk = max(1, _CHUNK_ELEMENTS // forecast[0].numel())
        rows = torch.cat([self._row_sums(forecast[i:i + chunk], target[i:i + chunk], is_ens,
                                         clim.samples(i, i + chunk) if clim is not None else None)
                          for i in range(0, target.shape[0], chunk)], dim=1)
        sums = rows.to(_FLOAT64) @ self._w_dev  # (quantity, B, L, C): latitude-weighted grid sums
        n_points = target.shape[-2] * target.shape[-1]
        se, ae, e = sums[0], sums[1], sums[2]
        self._add("se", se.sum(dim=0) / n_points)
        self._add("ae", ae.sum(dim=0) / n_points)
        self._add("e", e.sum(dim=0) / n_points)
        if clim is not None:
            # ACC from the observed anomaly oa = o - clim and the error: with fa = oa + err,
            # s_fo = sum w fa oa = s_oo + s_eo and s_ff = sum w fa^2 = s_oo + 2 s_eo + s_ee
            s_oo, s_eo = sums[3], sums[4]
            s_fo, s_ff = s_oo + s_eo, s_oo + 2 * s_eo + se
            # the expansion cancels when the forecast anomaly is tiny (a climatology forecast):
            # there, sum directly (an exactly zero anomaly then gives NaN, as documented)
            near_climatology = s_ff <= 1e-6 * s_oo
            if bool(near_climatology.any()):
                direct_fo, direct_ff = self._direct_anomaly_sums(forecast, target, is_ens, clim)
                s_fo = torch.where(near_climatology, direct_fo, s_fo)
                s_ff = torch.where(near_climatology, direct_ff, s_ff)
            self._add("acc", (s_fo / torch.sqrt(s_ff * s_oo)).sum(dim=0))
        self._n_samples += int(target.shape[0])

    def _inputs(self, forecast: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both on the sums' device at the inputs' precision, at least float32.

        Pointwise work at the inputs' precision: the difference of two float32 fields is exact to
        half an ulp of the result, so float32 loses nothing that float64 would keep (a half-precision
        difference would round the error itself); every sum over the grid is float64 after its row.
        """
        dtype = torch.promote_types(torch.promote_types(forecast.dtype, target.dtype), torch.float32)
        return forecast.to(device=self._device, dtype=dtype), target.to(device=self._device, dtype=dtype)

    @staticmethod
    def _error(f: torch.Tensor, o: torch.Tensor, is_ens: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(error of the (ensemble-mean) forecast, the members' departures from the truth or None)."""
        if not is_ens:
            return f - o, None
        # departures from the truth, not raw members: the ensemble mean of float32 members near
        # 5e4 would round its error by up to 2e-3; the mean departure keeps full precision
        departures = f - o.unsqueeze(1)
        return departures.mean(dim=1), departures

    def _row_sums(self, forecast: torch.Tensor, target: torch.Tensor, is_ens: bool,
                  clim: _Anomaly | None) -> torch.Tensor:
        """Sums over each row of W values, (quantity, b, L, C, H): err^2, |err|, err and, with a
        climatology, oa^2 and oa * err (oa = target - climatology); adds the ensemble scores."""
        f, o = self._inputs(forecast, target)
        err, departures = self._error(f, o, is_ens)
        quantities = [err * err, err.abs(), err]
        if clim is not None:
            oa = clim.subtract_from(o)
            quantities += [oa * oa, oa * err]
        rows = torch.stack([q.sum(dim=-1) for q in quantities])
        del quantities, err

        if departures is not None:
            skill, half_pair_sum, m = _crps_terms(f, o, 1, "ScoreAccumulator.update")  # float32-safe
            self._add("crps_fair", self._wmean(skill - half_pair_sum / (m * (m - 1))))
            self._add("crps_std", self._wmean(skill - half_pair_sum / (m * m)))
            del skill, half_pair_sum
            self._add("var", self._wmean(torch.var(departures.to(_FLOAT64), dim=1, correction=1)))
        return rows

    def _direct_anomaly_sums(self, forecast: torch.Tensor, target: torch.Tensor, is_ens: bool,
                             clim: _Anomaly) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample (B, L, C): sum w fa oa and sum w fa^2, from the forecast anomaly fa itself."""
        f, o = self._inputs(forecast, target)
        oa = clim.subtract_from(o)
        # (an ensemble's mean departure is exact where the rounded member mean is not)
        fa = oa + self._error(f, o, is_ens)[0] if is_ens else clim.subtract_from(f)
        return _weighted_grid_sum(fa * oa, self._w_dev), _weighted_grid_sum(fa * fa, self._w_dev)

    # -- results -------------------------------------------------------------------------------

    def compute(self) -> dict[str, dict[str, list[float]]]:
        """Return ``{metric: {channel: [value for each lead time]}}`` as Python floats.

        Raises ``ValueError`` if no sample has been accumulated.
        """
        if self._n_samples == 0:
            raise ValueError("ScoreAccumulator.compute: no samples were accumulated (call update)")
        n = float(self._n_samples)
        s = {k: v.cpu() / n for k, v in self._sums.items()}  # (L, C) float64 means
        rmse = torch.sqrt(s["se"])
        out: dict[str, torch.Tensor] = {"rmse": rmse, "mae": s["ae"], "bias": s["e"]}
        if "acc" in s:
            out["acc"] = s["acc"]
        if self._is_ensemble:
            spread = torch.sqrt(s["var"])
            out["crps"] = s["crps_fair"]
            out["crps_standard"] = s["crps_std"]
            m = self._ensemble_size
            out["ensemble_mean_rmse"] = rmse
            # WB2's DebiasedEnsembleMeanMSE: the squared error of an M-member mean overstates the
            # infinite-ensemble one by var / M on average; a negative estimate (a near-perfect
            # ensemble mean) gives NaN rather than a made-up zero
            out["ensemble_mean_rmse_debiased"] = torch.sqrt(s["se"] - s["var"] / m)
            out["spread"] = spread
            out["spread_skill"] = spread / rmse  # inf/NaN (no exception) when rmse == 0
            # Fortin et al. (2014): a reliable M-member ensemble has E[spread^2] = M / (M + 1)
            # E[rmse^2], so this factor makes 1 the calibrated value at any M
            out["spread_skill_corrected"] = math.sqrt((m + 1) / m) * spread / rmse
        else:
            out["crps"] = s["ae"]
        return {
            name: {
                ch: [float(v) for v in values[:, ci].tolist()]
                for ci, ch in enumerate(self.channels)
            }
            for name, values in out.items()
        }

    def __repr__(self) -> str:
        kind = {None: "empty", True: "ensemble", False: "deterministic"}[self._is_ensemble]
        return (
            f"ScoreAccumulator(channels={list(self.channels)}, lead_hours={list(self.lead_hours)}, "
            f"climatology={'fixed' if self._clim is not None else 'per batch' if self._clim_per_batch else 'no'}, "
            f"{kind}, "
            f"n_samples={self._n_samples})"
        )

