"""wxbench.nn, the layers shared by plugins: grid padding and convolutions, the tendency wrapper, the
latitude-weighted loss and teacher forcing."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from wxbench.errors import ConfigError
from wxbench.metrics import latitude_weights
from wxbench.nn import (GridConv2d, GridConvTranspose2d, TeacherForcing, TendencyWrapper, check_padding,
                        latitude_weighted_mse, pad_grid, zero_init_)
from wxbench.testing import DEFAULT_GRID


def test_import_wxbench_does_not_import_torch_or_wxbench_nn():
    code = "import sys, wxbench; print('torch' in sys.modules, 'wxbench.nn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# -- padding -------------------------------------------------------------------------------------

def test_circular_padding_wraps_longitude_exactly():
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    padded = pad_grid(x, 1, 2)  # defaults: circular in longitude, zeros in latitude
    assert padded.shape == (1, 2, 6, 10)
    inner = padded[..., 1:-1, :]
    assert torch.equal(inner[..., 2:-2], x)
    assert torch.equal(inner[..., :2], x[..., -2:])  # west of column 0: the last two columns
    assert torch.equal(inner[..., -2:], x[..., :2])  # east of the last column: the first two
    assert torch.count_nonzero(padded[..., 0, :]) == 0 and torch.count_nonzero(padded[..., -1, :]) == 0


def test_latitude_padding_replicates_edge_rows_and_zero_longitude_padding():
    x = torch.randn(1, 1, 4, 6)
    padded = pad_grid(x, 2, 1, lon_padding="zero", lat_padding="replicate")
    assert torch.equal(padded[..., :2, 1:-1], x[..., :1, :].expand(-1, -1, 2, -1))
    assert torch.equal(padded[..., -2:, 1:-1], x[..., -1:, :].expand(-1, -1, 2, -1))
    assert torch.count_nonzero(padded[..., 0]) == 0 and torch.count_nonzero(padded[..., -1]) == 0


@pytest.mark.parametrize("kwargs,option", [({"lon_padding": "zeros"}, "lon_padding"),
                                           ({"lat_padding": "circular"}, "lat_padding")])
def test_unknown_padding_is_a_config_error_naming_the_option(kwargs, option):
    args = {"lon_padding": "circular", "lat_padding": "zero", **kwargs}
    with pytest.raises(ConfigError, match=f"my_model: {option} must be one of"):
        check_padding(args["lon_padding"], args["lat_padding"], model="my_model")
    with pytest.raises(ConfigError, match=option):
        GridConv2d(1, 1, 3, **args)
    with pytest.raises(ConfigError, match=option):
        GridConvTranspose2d(1, 1, 4, 2, 1, **args)


# -- grid convolutions ---------------------------------------------------------------------------

@pytest.mark.parametrize("shift", [1, 5, -3])
def test_circular_conv_is_equivariant_to_a_longitude_roll(shift):
    torch.manual_seed(0)
    conv = GridConv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(conv(x.roll(shift, dims=-1)), conv(x).roll(shift, dims=-1))
        zero = GridConv2d(3, 4, 3, lon_padding="zero")
        zero.load_state_dict(conv.state_dict())
        # with zero padding the date line is a wall: the roll moves it through the field
        assert (zero(x.roll(shift, dims=-1)) - zero(x).roll(shift, dims=-1)).abs().max() > 1e-3


def test_zero_padded_grid_conv_is_plain_conv2d_with_the_same_initial_weights():
    torch.manual_seed(3)
    grid = GridConv2d(3, 5, 3, 2, lon_padding="zero", lat_padding="zero")
    torch.manual_seed(3)
    plain = nn.Conv2d(3, 5, 3, 2, 1)
    assert torch.equal(grid.weight, plain.weight) and torch.equal(grid.bias, plain.bias)
    x = torch.randn(1, 3, 8, 16)
    with torch.no_grad():
        assert torch.equal(grid(x), plain(x))
    # the circular one draws the same initial weights (only its padding differs)
    torch.manual_seed(3)
    assert torch.equal(GridConv2d(3, 5, 3, 2).weight, plain.weight)


def test_circular_transposed_conv_is_equivariant_and_keeps_the_padded_output_size():
    torch.manual_seed(1)
    up = GridConvTranspose2d(3, 2, 4, 2, 1)
    x = torch.randn(1, 3, 8, 16)
    with torch.no_grad():
        out = up(x)
        assert out.shape == nn.ConvTranspose2d(3, 2, 4, 2, 1)(x).shape == (1, 2, 16, 32)
        # one input column is two output columns at stride 2
        torch.testing.assert_close(up(x.roll(3, dims=-1)), out.roll(6, dims=-1))


# -- tendency wrapper ----------------------------------------------------------------------------

class _FoldedConv(nn.Module):
    """(B, 12, C, H, W) -> (B, 4, C, H, W): time folded into channels, one grid convolution."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = GridConv2d(12 * c, 4 * c, 3)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = history.shape
        return self.conv(history.reshape(b, t * c, h, w)).view(b, 4, c, h, w)


def test_tendency_wrapper_with_zero_initialised_output_is_persistence():
    torch.manual_seed(0)
    core = _FoldedConv(2)
    model = TendencyWrapper(core, output_layer=core.conv)
    assert model.residual and torch.count_nonzero(core.conv.weight) == 0 and torch.count_nonzero(core.conv.bias) == 0
    history = torch.randn(3, 12, 2, 8, 16)
    with torch.no_grad():
        assert torch.equal(model(history), history[:, -1:].expand(-1, 4, -1, -1, -1))


def test_tendency_wrapper_adds_the_last_state_and_is_a_pass_through_without_residual():
    torch.manual_seed(0)
    plain = TendencyWrapper(_FoldedConv(2), residual=False, output_layer=None)
    core = _FoldedConv(2)
    resid = TendencyWrapper(core, residual=True, output_layer=core.conv)
    assert torch.count_nonzero(plain.core.conv.weight) > 0  # residual=False leaves the output layer alone
    resid.load_state_dict(plain.state_dict())  # one layout (and state_dict keys) for both settings
    history = torch.randn(2, 12, 2, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(plain(history), plain.core(history))
        torch.testing.assert_close(resid(history), plain(history) + history[:, -1:])


def test_zero_init_handles_layers_without_bias():
    layer = zero_init_(nn.Linear(3, 2, bias=False))
    assert torch.count_nonzero(layer.weight) == 0 and layer.bias is None


# -- latitude-weighted loss ----------------------------------------------------------------------

def test_latitude_weighted_mse_equals_a_hand_computation():
    torch.manual_seed(0)
    lat = torch.tensor([-60.0, 0.0, 45.0])
    prediction, target = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    weights = latitude_weights(lat).float()
    cosines = [math.cos(math.radians(v)) for v in (-60.0, 0.0, 45.0)]
    assert weights.tolist() == pytest.approx([c / (sum(cosines) / 3) for c in cosines])  # mean 1
    total = 0.0
    for b in range(2):
        for k in range(4):
            for i in range(3):
                for j in range(5):
                    total += float(weights[i]) * float(prediction[b, k, i, j] - target[b, k, i, j]) ** 2
    expected = total / (2 * 4 * 3 * 5)
    assert float(latitude_weighted_mse(prediction, target, weights)) == pytest.approx(expected, rel=1e-6)
    # bf16 inputs are compared in float32
    assert latitude_weighted_mse(prediction.bfloat16(), target.bfloat16(), weights).dtype == torch.float32


def test_training_uses_the_one_latitude_weighted_mse():
    import wxbench.nn
    import wxbench.training

    assert wxbench.training.latitude_weighted_mse is wxbench.nn.latitude_weighted_mse


# -- teacher forcing -----------------------------------------------------------------------------

def test_teacher_forcing_draws_from_its_own_seeded_generator():
    forcing = TeacherForcing(0.5, seed=7, model="m")
    reference = torch.Generator().manual_seed(7)
    global_state = torch.get_rng_state()
    for _ in range(3):
        expected = [bool(d < 0.5) for d in torch.rand(4, generator=reference)]
        assert forcing.schedule(4, training=True) == expected
    assert torch.equal(torch.get_rng_state(), global_state)  # torch's global generator is untouched


def test_teacher_forcing_is_off_outside_training_and_at_ratio_zero_without_drawing():
    forcing = TeacherForcing(0.5, seed=0, model="m")
    state = forcing.get_state()
    assert forcing.schedule(4, training=False) is None
    assert torch.equal(forcing.get_state(), state)  # nothing drawn
    assert TeacherForcing(0.0, seed=0, model="m").schedule(4, training=True) is None
    assert TeacherForcing(1.0, seed=0, model="m").schedule(4, training=True) == [True] * 4


def test_teacher_forcing_state_round_trip():
    a = TeacherForcing(0.5, seed=1, model="m")
    a.schedule(4, training=True)
    b = TeacherForcing(0.5, seed=99, model="m")
    b.set_state(a.get_state())
    assert [a.schedule(8, training=True) for _ in range(3)] == [b.schedule(8, training=True) for _ in range(3)]


@pytest.mark.parametrize("ratio", [1.5, -0.1, "half", None])
def test_bad_teacher_forcing_ratio_is_a_config_error_naming_model_and_option(ratio):
    with pytest.raises(ConfigError, match="my_seq2seq: teacher_forcing_ratio must be"):
        TeacherForcing(ratio, seed=0, model="my_seq2seq")


def test_grid_layers_work_on_the_default_grid():
    """A smoke check on the harness's 32 x 64 grid: 'same' size out, for odd kernels of any size."""
    h, w = DEFAULT_GRID.shape
    x = torch.randn(1, 2, h, w)
    for k in (1, 3, 5):
        for lat_padding in ("zero", "replicate"):
            assert GridConv2d(2, 3, k, lat_padding=lat_padding)(x).shape == (1, 3, h, w)
