"""Tests of the ``wxbench-spatial`` plugin: cnn, deep_cnn, convlstm, convlstm_seq2seq, weather_transformer.

Conformance (the shared checks on the smoke configs), a short training run that must learn, and the
architecture: ConvLSTM gate equations against a hand computation, parameter counts at the original design's
defaults (from closed formulas), factorised attention shapes, periodic padding and residual forms.
"""

from __future__ import annotations

import importlib.metadata
import math

import numpy as np
import pytest
import torch

pytest.importorskip("wxbench_spatial")

from wxbench.errors import ConfigError  # noqa: E402
from wxbench.nn import GridConv2d, GridConvTranspose2d  # noqa: E402
from wxbench.testing import DEFAULT_GRID, check_forecaster, check_learns  # noqa: E402
from wxbench.training import count_parameters  # noqa: E402
from wxbench_spatial.cnn import CNN, DeepCNN  # noqa: E402
from wxbench_spatial.convlstm import ConvLSTM, ConvLSTMCell, ConvLSTMSeq2Seq  # noqa: E402
from wxbench_spatial.transformer import FactorisedLayer, WeatherTransformer, sinusoidal_encoding  # noqa: E402

MODELS = [CNN, DeepCNN, ConvLSTM, ConvLSTMSeq2Seq, WeatherTransformer]
C = DEFAULT_GRID.n_channels  # 4
H, W = DEFAULT_GRID.shape  # 32, 64


# one torch thread (wxbench.testing.one_torch_thread): fast and unaffected on a shared machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- registration and conformance -----------------------------------------------------------------

def test_entry_point_registers_the_five_models():
    eps = [ep for ep in importlib.metadata.entry_points(group="wxbench") if ep.name == "spatial"]
    assert len(eps) == 1 and eps[0].value == "wxbench_spatial.plugin"
    assert eps[0].dist.name == "wxbench-spatial"
    from wxbench.plugins import Registry

    registry = Registry()  # only this plugin: loading every installed plugin is slow and not our concern
    info = registry.add_plugin(eps[0].load(), name="spatial", distribution="wxbench-spatial")
    assert info.error is None
    assert info.forecasters == ["cnn", "deep_cnn", "convlstm", "convlstm_seq2seq", "weather_transformer"]
    for cls in MODELS:
        assert registry.forecasters[cls.name].cls is cls


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.name)
def test_declarations(cls):
    assert cls.normalisation == "zscore" and cls.probabilistic is False
    for profile in ("smoke", "cpu"):
        assert set(cls.profile_hyperparameters[profile]) <= set(cls.hyperparameters), profile
    model = cls(DEFAULT_GRID, **cls.profile_hyperparameters["smoke"])
    assert model.weights == "trained from scratch"
    assert model.describe()["parameters"] == count_parameters(model.module) > 0


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.name)
def test_conformance(cls):
    result = check_forecaster(cls)
    assert result["output_shape"] == (3, 4, C, H, W)


@pytest.mark.parametrize("cls,hyperparameters", [
    (CNN, {"residual": False}),
    (ConvLSTM, {"residual": False, "learning_rate": 3e-3}),
    (WeatherTransformer, {"residual": False}),
], ids=["cnn", "convlstm", "weather_transformer"])
def test_short_training_reduces_validation_error(cls, hyperparameters):
    # residual=False: the untrained network is far from the truth, so 30 steps of the shared loop
    # must lower the validation error by at least 5 %
    before, after = check_learns(cls, hyperparameters=hyperparameters)
    assert after < 0.95 * before


@pytest.mark.parametrize("cls,hyperparameters", [
    (CNN, {}),
    (ConvLSTMSeq2Seq, {"teacher_forcing_ratio": 0.5}),
], ids=["cnn", "convlstm_seq2seq_teacher_forcing"])
def test_residual_models_start_at_persistence_and_improve_on_it(cls, hyperparameters):
    from wxbench.testing import forecast_mse, synthetic_split

    val = synthetic_split(n_times=32, seed=2, name="val")
    model = cls(DEFAULT_GRID, **{**cls.profile_hyperparameters["smoke"], **hyperparameters})
    assert model.hparams["residual"] is True
    history, _ = val.windows(torch.arange(4))
    # zero-initialised output layer: the untrained model forecasts persistence exactly
    torch.testing.assert_close(model.predict(history), history[:, -1:].expand(-1, 4, -1, -1, -1))
    before, after = check_learns(cls, hyperparameters=hyperparameters, val=val)
    assert before == pytest.approx(forecast_mse(_Persistence(), val))
    assert after < 0.95 * before


class _Persistence:
    probabilistic = False
    needs_init_times = False

    def predict(self, history):
        return history[:, -1:].expand(-1, 4, -1, -1, -1)


def test_unknown_padding_is_a_config_error():
    with pytest.raises(ConfigError, match="lon_padding"):
        CNN(DEFAULT_GRID, hidden=4, lon_padding="periodic")
    with pytest.raises(ConfigError, match="teacher_forcing_ratio"):
        ConvLSTMSeq2Seq(DEFAULT_GRID, hidden=4, num_layers=1, teacher_forcing_ratio=1.5)


# -- parameter counts at the original design's defaults (docs/models.md) ----------------------------

def conv(cin, cout, k):
    return cin * cout * k * k + cout


def bn(c):
    return 2 * c


def test_cnn_parameters_at_defaults():
    h = 64
    expected = (conv(12 * C, h, 3) + bn(h) + conv(h, 2 * h, 3) + bn(2 * h) + conv(2 * h, 2 * h, 3) + bn(2 * h)
                + conv(2 * h, 4 * h, 3) + bn(4 * h)
                + conv(4 * h, 2 * h, 4) + bn(2 * h)  # ConvTranspose(256 -> 128, k4): same count as a conv
                + conv(2 * h, h, 3) + bn(h) + conv(h, 4 * C, 3))
    model = CNN(DEFAULT_GRID)
    assert model.hparams["hidden"] == 64
    assert count_parameters(model.module) == expected == 1_153_296


def test_deep_cnn_parameters_at_defaults():
    h, n = 64, 3
    expected = conv(12 * C, h, 3) + bn(h) + n * 2 * (conv(h, h, 3) + bn(h)) + conv(h, 4 * C, 1)
    model = DeepCNN(DEFAULT_GRID)
    assert model.hparams["n_residual_blocks"] == 3
    assert count_parameters(model.module) == expected == 251_216
    assert count_parameters(DeepCNN(DEFAULT_GRID, n_residual_blocks=5).module) == expected + 2 * 2 * (conv(h, h, 3) + bn(h))


def test_convlstm_parameters_at_defaults():
    h = 64
    cells = conv(C + h, 4 * h, 3) + conv(h + h, 4 * h, 3)  # 2 layers, one conv for the 4 gates each
    head = conv(h, h // 2, 3) + conv(h // 2, 4 * C, 1)
    model = ConvLSTM(DEFAULT_GRID)
    assert (model.hparams["hidden"], model.hparams["num_layers"], model.hparams["kernel_size"]) == (64, 2, 3)
    assert count_parameters(model.module) == cells + head == 471_088
    wide = ConvLSTM(DEFAULT_GRID, head_hidden=48)  # the head's width is a hyperparameter (None: hidden / 2)
    assert count_parameters(wide.module) == cells + conv(h, 48, 3) + conv(48, 4 * C, 1)
    seq = ConvLSTMSeq2Seq(DEFAULT_GRID)
    assert count_parameters(seq.module) == 2 * cells + conv(h, C, 3) == 906_500


def test_weather_transformer_parameters_at_defaults():
    d, ff, layers, dec, ph, pw = 128, 512, 4, 2, 4, 8
    n = (H // ph) * (W // pw)
    mha = 4 * d * d + 4 * d  # in_proj (3d x d + 3d) and out_proj (d x d + d)
    ffn = d * ff + ff + ff * d + d
    norm = 2 * d
    expected = (C * d * ph * pw + d  # patch embedding
                + n * d  # learnable spatial encoding
                + layers * (2 * mha + ffn + 3 * norm)  # spatial attn, temporal attn, FFN
                + 4 * n * d  # output queries
                + dec * (2 * mha + ffn + 3 * norm)  # self-attn, cross-attn, FFN
                + d * ph * pw * C + ph * pw * C)  # linear un-patchify head
    model = WeatherTransformer(DEFAULT_GRID)
    hp = model.hparams
    assert (hp["d_model"], hp["n_heads"], hp["n_layers"], tuple(hp["patch_size"])) == (128, 4, 4, (4, 8))
    count = count_parameters(model.module)
    assert count == expected == 1_661_440
    assert 1.5e6 < count < 1.75e6  # the original design: "about 1.6 M"
    assert tuple(model.module.core.queries.shape) == (4, 64, 128)


# -- ConvLSTM cell: gate equations by hand ---------------------------------------------------------

def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


@pytest.mark.parametrize("lon_padding", ["circular", "zero"])
def test_convlstm_cell_matches_hand_computation(lon_padding):
    torch.manual_seed(0)
    cin, hid, hh, ww = 2, 3, 3, 4
    cell = ConvLSTMCell(cin, hid, 3, lon_padding=lon_padding, lat_padding="zero")
    with torch.no_grad():  # non-trivial weights so every gate matters
        cell.conv.weight.normal_(0, 0.5)
        cell.conv.bias.normal_(0, 0.5)
    x = torch.randn(1, cin, hh, ww)
    h0 = torch.randn(1, hid, hh, ww)
    c0 = torch.randn(1, hid, hh, ww)
    h1, c1 = cell(x, (h0, c0))

    wt = cell.conv.weight.detach().double().numpy()
    bias = cell.conv.bias.detach().double().numpy()
    z = np.concatenate([x.numpy(), h0.numpy()], axis=1)[0].astype(np.float64)  # [x, h]
    a = np.zeros((4 * hid, hh, ww))
    for o in range(4 * hid):
        for i in range(hh):
            for j in range(ww):
                s = bias[o]
                for ci in range(cin + hid):
                    for di in (-1, 0, 1):
                        ii = i + di
                        if not 0 <= ii < hh:
                            continue  # zero padding in latitude
                        for dj in (-1, 0, 1):
                            jj = j + dj
                            if lon_padding == "circular":
                                jj %= ww  # longitude wraps around
                            elif not 0 <= jj < ww:
                                continue
                            s += wt[o, ci, di + 1, dj + 1] * z[ci, ii, jj]
                a[o, i, j] = s
    a_i, a_f, a_g, a_o = a[:hid], a[hid:2 * hid], a[2 * hid:3 * hid], a[3 * hid:]
    c_prev = c0[0].double().numpy()
    c_expected = _sigmoid(a_f) * c_prev + _sigmoid(a_i) * np.tanh(a_g)
    h_expected = _sigmoid(a_o) * np.tanh(c_expected)
    np.testing.assert_allclose(c1[0].detach().double().numpy(), c_expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h1[0].detach().double().numpy(), h_expected, rtol=1e-5, atol=1e-5)


def test_convlstm_forget_gate_bias_starts_at_one():
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 5, 3)
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(7, 20, 3)
    torch.testing.assert_close(cell.conv.bias[5:10], plain.bias[5:10] + 1.0)
    torch.testing.assert_close(cell.conv.bias[:5], plain.bias[:5])


def test_convlstm_uses_last_hidden_state_of_last_layer():
    model = ConvLSTM(DEFAULT_GRID, hidden=4, num_layers=2, residual=False)
    seen = []
    model.module.core.head.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))
    core = model.module.core
    history = torch.randn(2, 12, C, H, W)
    with torch.no_grad():
        out = model.module(history)
        top, states = core.stack.run(history)
        manual = core.head(top).view(2, 4, C, H, W)
    assert seen[0] == (2, 4, H, W) and len(states) == 2
    torch.testing.assert_close(out, manual)
    # the last input step matters, and so does the first (the recurrence carries it)
    for t in (0, 11):
        changed = history.clone()
        changed[:, t] += 1.0
        with torch.no_grad():
            assert not torch.allclose(model.module(changed), out)


# -- seq2seq: autoregressive decoder and teacher forcing --------------------------------------------

def test_seq2seq_teacher_forcing_feeds_the_truth_only_in_training():
    model = ConvLSTMSeq2Seq(DEFAULT_GRID, hidden=4, num_layers=1, teacher_forcing_ratio=1.0)
    net = model.module
    history = torch.randn(2, 12, C, H, W)
    target = torch.randn(2, 4, C, H, W)
    other = target.clone()
    other[:, 0] += 1.0  # changes only the frame fed (under teacher forcing) to decoder step 1
    net.train()
    schedule = model.teacher_forcing_schedule()
    assert schedule == [True] * 4  # ratio 1: every step after the first is teacher-forced
    with torch.no_grad():
        a = net(history, target, schedule)
        b = net(history, other, schedule)
    torch.testing.assert_close(a[:, 0], b[:, 0])  # step 0 reads the last observed frame
    assert not torch.allclose(a[:, 1], b[:, 1])  # step 1 reads target[:, 0]
    net.eval()
    assert model.teacher_forcing_schedule() is None
    free = ConvLSTMSeq2Seq(DEFAULT_GRID, hidden=4, num_layers=1)  # ratio 0 (the default)
    free.module.train()
    assert free.hparams["teacher_forcing_ratio"] == 0.0 and free.teacher_forcing_schedule() is None


def test_seq2seq_decoder_is_autoregressive_from_the_last_frame():
    model = ConvLSTMSeq2Seq(DEFAULT_GRID, hidden=4, num_layers=2, residual=True)
    net = model.module.eval()
    history = torch.randn(1, 12, C, H, W)
    with torch.no_grad():
        out = net(history)
        _, states = net.encoder.run(history)
        x, frames = history[:, -1], []
        for _ in range(4):
            top, states = net.decoder.step(x, states)
            x = x + net.to_frame(top)  # residual: increment over the decoder's input frame
            frames.append(x)
    torch.testing.assert_close(out, torch.stack(frames, 1))


# -- weather transformer: factorised attention ------------------------------------------------------

def test_weather_transformer_factorised_attention_shapes():
    model = WeatherTransformer(DEFAULT_GRID, d_model=32, n_heads=4, n_layers=2, decoder_layers=1, ff_dim=64)
    net = model.module.core.eval()
    shapes: dict[str, list] = {"spatial": [], "temporal": []}
    for layer in net.layers:
        layer.spatial_attn.register_forward_hook(lambda m, i, o: shapes["spatial"].append(tuple(i[0].shape)))
        layer.temporal_attn.register_forward_hook(lambda m, i, o: shapes["temporal"].append(tuple(i[0].shape)))
    cross = []
    net.decoder.layers[0].multihead_attn.register_forward_hook(
        lambda m, i, o: cross.append((tuple(i[0].shape), tuple(i[1].shape))))
    b = 3
    history = torch.randn(b, 12, C, H, W)
    with torch.no_grad():
        tokens = net.encode(history)
        out = net(history)
    assert tuple(tokens.shape) == (b, 12, 64, 32)  # 12 steps x (32/4)*(64/8) patches x d_model
    # spatial attention: one sequence of 64 patches per (sample, time step)
    assert shapes["spatial"][:2] == [(b * 12, 64, 32)] * 2
    # temporal attention: one sequence of 12 steps per (sample, patch)
    assert shapes["temporal"][:2] == [(b * 64, 12, 32)] * 2
    # the decoder's 4 x 64 queries attend to all 12 x 64 encoder tokens
    assert cross[0] == ((b, 4 * 64, 32), (b, 12 * 64, 32))
    assert tuple(out.shape) == (b, 4, C, H, W)


@pytest.mark.parametrize("plus_last", [True, False])
def test_weather_transformer_decoder_queries(plus_last):
    model = WeatherTransformer(DEFAULT_GRID, d_model=16, n_heads=2, n_layers=1, decoder_layers=1, ff_dim=16,
                               queries_plus_last_step=plus_last)
    net = model.module.core.eval()
    captured = []
    net.decoder.register_forward_hook(lambda m, inputs, out: captured.append(inputs))
    history = torch.randn(2, 12, C, H, W)
    with torch.no_grad():
        net(history)
        tokens = net.encode(history)  # (B, 12, 64, d)
    tgt, memory = captured[0]
    torch.testing.assert_close(memory, tokens.reshape(2, 12 * 64, 16))
    # 4 lead times x 64 patches of learnable queries, plus (default) the last observed step's tokens
    expected = net.queries[None] + (tokens[:, -1:] if plus_last else 0)
    torch.testing.assert_close(tgt, expected.expand(2, -1, -1, -1).reshape(2, 4 * 64, 16))


def test_factorised_layer_spatial_attention_stays_within_a_time_step():
    torch.manual_seed(0)
    layer = FactorisedLayer(16, 2, 32, 0.0).eval()
    x = torch.randn(1, 5, 6, 16)  # (B, T, N, d)
    # spatial sub-block alone: a change at (t=2, patch 0) reaches the other patches of step 2 only
    def spatial(v):
        b, t, n, d = v.shape
        s = v.reshape(b * t, n, d)
        return layer.norm_spatial(s + layer.spatial_attn(s, s, s, need_weights=False)[0]).view(b, t, n, d)

    y = x.clone()
    y[0, 2, 0] += 1.0
    with torch.no_grad():
        diff = (spatial(y) - spatial(x)).abs().sum(-1)[0]  # (T, N)
    assert (diff[2] > 0).all() and (diff[[0, 1, 3, 4]] == 0).all()
    # the full layer: temporal attention then spreads it across the time steps
    with torch.no_grad():
        full = (layer(y) - layer(x)).abs().sum(-1)[0]
    assert (full > 0).all()


def test_sinusoidal_temporal_encoding():
    pe = sinusoidal_encoding(12, 8)
    assert pe.shape == (12, 8)
    torch.testing.assert_close(pe[:, 0], torch.sin(torch.arange(12.0)))
    torch.testing.assert_close(pe[:, 1], torch.cos(torch.arange(12.0)))
    torch.testing.assert_close(pe[3, 2], torch.sin(torch.tensor(3.0) / 10000 ** (2 / 8)))


def test_weather_transformer_unpatchify_places_patches():
    """A head that emits the patch index puts it on the right 4 x 8 block of the grid."""
    model = WeatherTransformer(DEFAULT_GRID, d_model=16, n_heads=2, n_layers=1, decoder_layers=1, ff_dim=16,
                               residual=False)
    net = model.module.core.eval()
    net.decoder = _Ignore()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
        out = net(torch.zeros(1, 12, C, H, W))
    assert torch.count_nonzero(out) == 0
    # query token k = step * 64 + row * 8 + col; make the decoder output its index
    net.decoder = _TokenIndex()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.weight[:, 0] = 1.0  # every output value = token index
        out = net(torch.zeros(1, 12, C, H, W))
    for step, row, col in [(0, 0, 0), (1, 2, 5), (3, 7, 7)]:
        block = out[0, step, :, row * 4:(row + 1) * 4, col * 8:(col + 1) * 8]
        assert (block == step * 64 + row * 8 + col).all()


class _Ignore(torch.nn.Module):
    def forward(self, queries, memory):
        return queries


class _TokenIndex(torch.nn.Module):
    def forward(self, queries, memory):
        b, n, d = queries.shape
        out = torch.zeros(b, n, d)
        out[:, :, 0] = torch.arange(n, dtype=torch.float32)
        return out


# -- periodic longitude and the residual form --------------------------------------------------------

def test_grid_convolutions_wrap_in_longitude():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 16)
    tiled = torch.cat([x, x, x], dim=-1)  # the periodic extension, explicitly
    conv = GridConv2d(3, 5, 3)
    ref = torch.nn.functional.conv2d(tiled, conv.weight, conv.bias, padding=(1, 0))[..., 15:31]
    torch.testing.assert_close(conv(x), ref)
    up = GridConvTranspose2d(3, 4, 4, 2, 1)
    ref_up = torch.nn.functional.conv_transpose2d(tiled, up.weight, up.bias, stride=2, padding=1)
    # output column o' of the middle copy sits at 2 * 16 + o' in the tiled transposed convolution
    torch.testing.assert_close(up(x), ref_up[..., 32:64])
    zero_up = GridConvTranspose2d(3, 4, 4, 2, 1, lon_padding="zero")
    torch.testing.assert_close(zero_up(x), torch.nn.functional.conv_transpose2d(x, zero_up.weight, zero_up.bias,
                                                                                   stride=2, padding=1))


@pytest.mark.parametrize("cls,kwargs,shift", [
    (CNN, {"hidden": 4}, 2),  # one stride-2 stage: equivariant under even shifts
    (DeepCNN, {"hidden": 4, "n_residual_blocks": 1}, 1),
    (ConvLSTM, {"hidden": 4, "num_layers": 1}, 1),
], ids=["cnn", "deep_cnn", "convlstm"])
def test_circular_padding_makes_models_rotation_equivariant(cls, kwargs, shift):
    history = torch.randn(2, 12, C, H, W)

    def rotated_error(lon_padding):
        torch.manual_seed(0)
        net = cls(DEFAULT_GRID, lon_padding=lon_padding, residual=False, **kwargs).module.eval()
        with torch.no_grad():
            return (net(history.roll(shift, -1)) - net(history).roll(shift, -1)).abs().max().item()

    assert rotated_error("circular") < 1e-5
    assert rotated_error("zero") > 1e-3  # the date line is a wall with zero padding


def test_default_padding_choices():
    for cls in (CNN, DeepCNN, ConvLSTM, ConvLSTMSeq2Seq):
        assert cls.hyperparameters["lon_padding"] == "circular"
        assert cls.hyperparameters["lat_padding"] == "zero"


@pytest.mark.parametrize("cls,kwargs", [
    (CNN, {"hidden": 4}),
    (ConvLSTM, {"hidden": 4, "num_layers": 1}),
    (WeatherTransformer, {"d_model": 16, "n_heads": 2, "n_layers": 1, "decoder_layers": 1, "ff_dim": 16}),
], ids=["cnn", "convlstm", "weather_transformer"])
def test_residual_adds_the_last_observed_state(cls, kwargs):
    history = torch.randn(2, 12, C, H, W)
    torch.manual_seed(0)
    plain = cls(DEFAULT_GRID, residual=False, **kwargs).module.eval()
    torch.manual_seed(0)
    resid = cls(DEFAULT_GRID, residual=True, **kwargs).module.eval()
    resid.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(resid(history), plain(history) + history[:, -1:])
    assert cls.hyperparameters["residual"] is True


def test_cnn_encoder_halves_the_grid_and_decoder_restores_it():
    core = CNN(DEFAULT_GRID, hidden=8).module.core.eval()
    with torch.no_grad():
        latent = core.encoder(torch.randn(1, 12 * C, H, W))
        out = core(torch.randn(1, 12, C, H, W))
    assert tuple(latent.shape) == (1, 32, H // 2, W // 2)  # 4 * hidden channels at 16 x 32
    assert tuple(out.shape) == (1, 4, C, H, W)
    kinds = [type(m).__name__ for m in core.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert kinds == ["GridConv2d"] * 4 + ["GridConvTranspose2d"] + ["GridConv2d"] * 2
    assert math.prod(core.encoder[2][0].stride) == 4  # the stride-2 convolution
