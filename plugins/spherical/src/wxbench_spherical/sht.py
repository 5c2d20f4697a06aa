"""Spherical harmonic transforms on the data's own latitudes (WeatherBench cell centres, no poles).

Why this module exists
----------------------
torch-harmonics 0.9.3 knows four latitude grids (``torch_harmonics.quadrature``):

========================== ============================================ ===========================
grid                        nodes                                        matches WeatherBench?
========================== ============================================ ===========================
``equiangular``             Clenshaw-Curtis, equispaced in theta *with*  no: 5.806 deg apart, rows up
                            both poles (theta_k = k pi / (N - 1))        to 2.8 deg off
``equiangular-trapezoidal`` equispaced in cos(theta), with poles         no
``lobatto``                 Gauss-Lobatto, with poles                    no
``legendre-gauss``          Gauss-Legendre roots, no poles               no: up to 1.4 deg off
========================== ============================================ ===========================

The WeatherBench 5.625 deg grid has its 32 latitudes at the cell centres
``theta_k = (k + 1/2) pi / N`` (colatitude; latitudes -87.1875 .. 87.1875): none of the above.
Feeding the data to a transform built for another grid silently misplaces every row and aliases
energy across degrees (measured below). Interpolating to a Gauss grid and back would add an
interpolation error on every forward pass. So this module keeps torch-harmonics' ``RealSHT`` /
``InverseRealSHT`` (their FFT, einsum layout and ortho-normalised, Condon-Shortley-phased associated
Legendre functions from ``torch_harmonics.legendre.legpoly``) and only replaces the precomputed
Legendre tables with ones evaluated at the data's actual latitudes:

* inverse (synthesis): ``f_m(x_k) = sum_l a_lm P_l^m(x_k)``, exact at any nodes;
* forward (analysis): a weighted least-squares fit of the degrees ``l = m .. lmax-1`` at each order
  ``m``, ``a_m = (P_m^T Q P_m)^-1 P_m^T Q f_m``, with ``Q`` the interpolatory quadrature weights of
  the nodes. For cell-centre nodes these are Fejer's first rule (the nodes are Chebyshev points of
  the first kind in ``x = cos theta``), the same weights dinosaur (the model that generated the
  embedded data) uses for its ``equiangular`` grid. With 32 symmetric nodes the rule integrates
  polynomials of degree <= 32 exactly, hence ``P_m^T Q P_m = I / (2 pi)`` for ``lmax <= 17`` and the
  fit is then *exactly* the usual quadrature transform ``2 pi P_m^T Q f``; for larger ``lmax`` the
  fit is still an exact inverse of synthesis on band-limited fields (the matrices are well
  conditioned, see ``conditioning``), where a plain quadrature would alias.

Measured (float64, a random field with white spectrum band-limited to lmax, sampled on the 32 x 64
WeatherBench grid; ``python -m wxbench_spherical.sht`` reprints them), as (relative max round-trip
error, relative RMS error of the recovered coefficients):

===================================== =================== =================== ===================
transform                              lmax 16 (T15)       lmax 22 (T21)       lmax 32 (T31)
===================================== =================== =================== ===================
this module                            3e-16, 2e-16        3e-16, 3e-16        4e-16, 4e-16
torch-harmonics ``legendre-gauss``     9.5e-2, 7.1e-2      1.1e-1, 1.1e-1      1.4e-1, 1.5e-1
torch-harmonics ``equiangular``        2.0e-1, 1.4e-1      2.9e-1, 2.3e-1      3.3e-1, 3.1e-1
===================================== =================== =================== ===================

(the torch-harmonics transforms given the rows north to south, as they expect). Condition number of
the per-order least-squares systems: 1 up to lmax 17 (the quadrature is exact), 1.04 at 22, 3.2 at 32.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch_harmonics import InverseRealSHT, RealSHT
from torch_harmonics.legendre import legpoly
from torch_harmonics.truncation import truncate_sht

DATA_GRID = "data (cell-centre equiangular, no poles)"


def colatitudes(lat_degrees: Sequence[float]) -> torch.Tensor:
    """Colatitudes in radians (float64), in the data's row order (any order works)."""
    return torch.deg2rad(90.0 - torch.as_tensor(list(lat_degrees), dtype=torch.float64))


def interpolatory_weights(x: torch.Tensor) -> torch.Tensor:
    """Weights ``q`` with ``sum_k q_k p(x_k) = int_{-1}^{1} p(x) dx`` for all polynomials of degree < N.

    Solves the Legendre moment equations ``sum_k q_k P_j(x_k) = 2 delta_j0`` (j < N), as dinosaur does.
    For cell-centre latitudes this is Fejer's first rule (see :func:`fejer1_weights`).
    """
    n = len(x)
    # legpoly (ortho, m = 0) gives sqrt((2j + 1) / (4 pi)) P_j(x); rescale to the plain P_j(x)
    p = legpoly(1, n, x, norm="ortho", csphase=False)[0]  # (n_l, n_k) = sqrt((2j+1)/(4 pi)) P_j(x)
    p = p / torch.sqrt((2 * torch.arange(n, dtype=torch.float64) + 1) / (4 * math.pi))[:, None]
    rhs = torch.zeros(n, dtype=torch.float64)
    rhs[0] = 2.0
    return torch.linalg.solve(p, rhs)


def fejer1_weights(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form Fejer (first rule) nodes ``x_k = cos((k + 1/2) pi / n)`` and weights on [-1, 1]."""
    theta = (torch.arange(n, dtype=torch.float64) + 0.5) * math.pi / n
    j = torch.arange(1, n // 2 + 1, dtype=torch.float64)
    series = (torch.cos(2 * j[None, :] * theta[:, None]) / (4 * j[None, :] ** 2 - 1)).sum(dim=1)
    return torch.cos(theta), 2.0 / n * (1 - 2 * series)


def _forward_tables(x: torch.Tensor, lmax: int, mmax: int) -> torch.Tensor:
    """Analysis tables (mmax, lmax, nlat): weighted least-squares inverse of synthesis, per order m."""
    q = interpolatory_weights(x)
    pct = legpoly(mmax, lmax, x, norm="ortho", inverse=False, csphase=True)  # (m, l, k)
    tables = torch.zeros_like(pct)
    for m in range(mmax):
        if m >= lmax:
            break
        p = pct[m, m:].T  # (k, l >= m): synthesis matrix of order m
        gram = p.T @ (q[:, None] * p)  # = I / (2 pi) where the quadrature is exact
        tables[m, m:] = torch.linalg.solve(gram, p.T * q[None, :])
    return tables


def conditioning(lat_degrees: Sequence[float], lmax: int, mmax: int | None = None) -> float:
    """Largest condition number of the per-order Gram matrices (1 where the quadrature is exact)."""
    x = torch.cos(colatitudes(lat_degrees))
    mmax = mmax or lmax
    q = interpolatory_weights(x)
    pct = legpoly(mmax, lmax, x, norm="ortho", csphase=True)
    worst = 1.0
    for m in range(min(mmax, lmax)):
        p = pct[m, m:].T
        worst = max(worst, float(torch.linalg.cond(p.T @ (q[:, None] * p))))
    return worst


def _init_data_grid_transform(transform: torch.nn.Module, lat_degrees: Sequence[float], nlon: int, lmax: int,
                              mmax: int) -> torch.Tensor:
    """Set the attributes torch-harmonics' (inverse) real SHT reads; return cos(colatitude) of the rows.

    Both data-grid transforms replace the parent's ``__init__`` (which would build quadrature tables
    for its own grids) and keep its ``forward``.
    """
    torch.nn.Module.__init__(transform)
    transform.nlat, transform.nlon = len(lat_degrees), nlon
    transform.grid, transform.norm, transform.csphase = DATA_GRID, "ortho", True
    transform.lmax, transform.mmax = truncate_sht(transform.nlat, nlon, lmax, mmax, "legendre-gauss")
    return torch.cos(colatitudes(lat_degrees))


class DataGridRealSHT(RealSHT):
    """torch-harmonics' forward real SHT, with analysis tables for arbitrary (e.g. cell-centre) latitudes.

    Input ``(..., nlat, nlon)`` with rows at ``lat_degrees`` (in that order) and longitudes
    ``2 pi j / nlon``; output complex ``(..., lmax, mmax)`` in torch-harmonics' convention.
    """

    def __init__(self, lat_degrees: Sequence[float], nlon: int, lmax: int, mmax: int,
                 dtype: torch.dtype = torch.float32) -> None:
        x = _init_data_grid_transform(self, lat_degrees, nlon, lmax, mmax)
        # RealSHT.forward contracts rfft(x, norm="forward") with these tables; the 2 pi of the
        # longitudinal integral is already inside the least-squares solution
        self.register_buffer("weights", _forward_tables(x, self.lmax, self.mmax).to(dtype).contiguous(),
                             persistent=False)


class DataGridInverseRealSHT(InverseRealSHT):
    """torch-harmonics' inverse real SHT, synthesising at arbitrary (e.g. cell-centre) latitudes."""

    def __init__(self, lat_degrees: Sequence[float], nlon: int, lmax: int, mmax: int,
                 dtype: torch.dtype = torch.float32) -> None:
        x = _init_data_grid_transform(self, lat_degrees, nlon, lmax, mmax)
        pct = legpoly(self.mmax, self.lmax, x, norm="ortho", inverse=True, csphase=True)  # (m, l, k)
        self.register_buffer("pct", pct.permute(0, 2, 1).to(dtype).contiguous(), persistent=False)


def band_limited_coefficients(lmax: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """Random complex coefficients (batch, lmax, lmax) of a real field with degrees < lmax (float64)."""
    g = torch.Generator().manual_seed(seed)
    coeffs = torch.view_as_complex(torch.randn(batch, lmax, lmax, 2, generator=g, dtype=torch.float64))
    coeffs = torch.tril(coeffs)  # layout (l, m): keep m <= l
    coeffs[..., 0] = coeffs[..., 0].real  # the m = 0 coefficients of a real field are real
    return coeffs


def band_limited_field(lat_degrees: Sequence[float], nlon: int, lmax: int, seed: int = 0,
                       batch: int = 1) -> torch.Tensor:
    """A random real field with only degrees < lmax, evaluated exactly at the given latitudes (float64)."""
    isht = DataGridInverseRealSHT(lat_degrees, nlon, lmax, lmax, dtype=torch.float64)
    return isht(band_limited_coefficients(lmax, seed, batch))


def compare_grids(lat_degrees: Sequence[float], nlon: int = 64, lmax: int = 16) -> dict[str, tuple[float, float]]:
    """For a random field band-limited to ``lmax`` sampled on ``lat_degrees``: (relative max error of
    the forward-inverse round trip, relative RMS error of the spherical harmonic coefficients), through
    this module and through torch-harmonics' built-in grids (which assume other latitudes)."""
    coeffs = band_limited_coefficients(lmax, seed=0)
    field = DataGridInverseRealSHT(lat_degrees, nlon, lmax, lmax, dtype=torch.float64)(coeffs)
    # torch-harmonics' grids order rows north to south; give them the rows in that order
    north_first = bool(lat_degrees[0] > lat_degrees[-1])
    rows = field if north_first else field.flip(-2)
    scale = float(field.abs().max())
    transforms = {"data grid (this module)": (
        DataGridRealSHT(lat_degrees, nlon, lmax, lmax, dtype=torch.float64),
        DataGridInverseRealSHT(lat_degrees, nlon, lmax, lmax, dtype=torch.float64), field)}
    for grid in ("legendre-gauss", "equiangular"):
        transforms[f"torch-harmonics {grid!r}"] = (
            RealSHT(len(lat_degrees), nlon, lmax=lmax, mmax=lmax, grid=grid).double(),
            InverseRealSHT(len(lat_degrees), nlon, lmax=lmax, mmax=lmax, grid=grid).double(), rows)
    errors = {}
    for name, (fwd, inv, x) in transforms.items():
        c = fwd(x)
        errors[name] = (float((inv(c) - x).abs().max()) / scale,
                        float((c - coeffs).abs().pow(2).sum().sqrt() / coeffs.abs().pow(2).sum().sqrt()))
    return errors


if __name__ == "__main__":  # pragma: no cover - prints the numbers quoted in the docstring
    lat = [-87.1875 + 5.625 * i for i in range(32)]
    for lm in (16, 17, 22, 32):
        print(f"lmax={lm}: condition {conditioning(lat, lm):.3g}; "
              + "; ".join(f"{k}: round trip {a:.1e}, coefficients {b:.1e}" for k, (a, b) in compare_grids(lat, 64, lm).items()))
    xf, wf = fejer1_weights(32)
    print("interpolatory weights == Fejer-1:", float((interpolatory_weights(xf) - wf).abs().max()))
    print("Fejer nodes vs data latitudes (deg):",
          float((torch.rad2deg(torch.arccos(xf)) - (90 - torch.tensor(lat[::-1], dtype=torch.float64))).abs().max()))
