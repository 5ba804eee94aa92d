"""Tests for semalign.method.align against independent numpy / scipy / autograd references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.linear_model import Ridge
from torch import nn

from semalign.method.align import (
    KINDS,
    SCALINGS,
    Aligner,
    fit_affine_gd,
    fit_affine_lstsq,
    fit_l_ortho,
    fit_linear,
    fit_procrustes,
    fit_ridge,
    select_anchors,
    standard_stats,
)

# (d_x, d_y) both ways round, as between encoders of different widths.
MISMATCHED = [(12, 7), (7, 12)]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The problems here are tiny: one thread spares thousands of OpenMP hand-offs per fit,
    which cost seconds each test when the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def paired(n: int, d_x: int, d_y: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random paired spaces with uneven per-dimension offsets and scales."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_x)) * rng.uniform(0.5, 3, d_x) + rng.normal(0, 2, d_x)
    y = x @ rng.standard_normal((d_x, d_y)) + rng.standard_normal((n, d_y)) + rng.normal(0, 2, d_y)
    return x, y


def standardise(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return (a - ref.mean(axis=0)) / ref.std(axis=0)


def destandardise(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return a * ref.std(axis=0) + ref.mean(axis=0)


def pad(a: np.ndarray, d: int) -> np.ndarray:
    return np.hstack([a, np.zeros((len(a), d - a.shape[1]))])


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth - truth.mean(axis=0)))


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("d_x, d_y", MISMATCHED)
def test_linear_matches_numpy_lstsq(d_x, d_y):
    x, y = paired(40, d_x, d_y)
    test = paired(10, d_x, d_y, seed=1)[0]
    weight = np.linalg.lstsq(standardise(x, x), standardise(y, y), rcond=None)[0]
    expected = destandardise(standardise(test, x) @ weight, y)
    np.testing.assert_allclose(Aligner("linear").fit(x, y).transform(test), expected, atol=1e-8)


@pytest.mark.parametrize("d_x, d_y", MISMATCHED)
def test_ortho_matches_scipy_procrustes_on_padded_data(d_x, d_y):
    x, y = paired(40, d_x, d_y)
    test = paired(10, d_x, d_y, seed=1)[0]
    d = max(d_x, d_y)
    rotation, _ = scipy.linalg.orthogonal_procrustes(pad(standardise(x, x), d), pad(standardise(y, y), d))
    expected = destandardise((pad(standardise(test, x), d) @ rotation)[:, :d_y], y)
    np.testing.assert_allclose(Aligner("ortho").fit(x, y).transform(test), expected, atol=1e-8)


@pytest.mark.parametrize("d_x, d_y", MISMATCHED)
def test_l_ortho_matches_polar_factor_of_lstsq(d_x, d_y):
    x, y = paired(40, d_x, d_y)
    test = paired(10, d_x, d_y, seed=1)[0]
    weight = np.linalg.lstsq(standardise(x, x), standardise(y, y), rcond=None)[0]
    polar, _ = scipy.linalg.polar(weight)
    expected = destandardise(standardise(test, x) @ polar, y)
    np.testing.assert_allclose(Aligner("l-ortho").fit(x, y).transform(test), expected, atol=1e-8)


@pytest.mark.parametrize("d_x, d_y", MISMATCHED)
def test_closed_form_affine_matches_lstsq_with_ones_column(d_x, d_y):
    x, y = paired(40, d_x, d_y)
    test = paired(10, d_x, d_y, seed=1)[0]
    solution = np.linalg.lstsq(np.hstack([x, np.ones((40, 1))]), y, rcond=None)[0]
    expected = test @ solution[:-1] + solution[-1]
    aligner = Aligner("affine", scaling="none", affine_fit="lstsq").fit(x, y)
    np.testing.assert_allclose(aligner.transform(test), expected, atol=1e-8)
    assert np.abs(aligner.state["bias"]).max() > 0.1  # the raw data really has an offset


@pytest.mark.parametrize("n", [5, 40])  # minimum-norm (n < d_x) and overdetermined
def test_closed_form_affine_equals_linear_under_standard_scaling(n):
    x, y = paired(n, 12, 7)
    test = paired(10, 12, 7, seed=1)[0]
    affine = Aligner("affine", affine_fit="lstsq").fit(x, y)
    np.testing.assert_allclose(affine.state["bias"], 0, atol=1e-10)
    np.testing.assert_allclose(affine.transform(test), Aligner("linear").fit(x, y).transform(test), atol=1e-8)


def test_minimum_norm_linear_when_anchors_are_fewer_than_dims():
    x, y = paired(5, 12, 7)
    weight = fit_linear(x, y)
    np.testing.assert_allclose(weight, np.linalg.pinv(x) @ y, atol=1e-10)


@pytest.mark.parametrize("n", [5, 40])  # fewer and more anchors than d_x
@pytest.mark.parametrize("d_x, d_y", MISMATCHED)
@pytest.mark.parametrize("alpha", [0.3, 25.0])
def test_ridge_matches_sklearn_ridge_on_scaled_data(n, d_x, d_y, alpha):
    x, y = paired(n, d_x, d_y)
    test = paired(10, d_x, d_y, seed=1)[0]
    reference = Ridge(alpha=alpha, fit_intercept=False).fit(standardise(x, x), standardise(y, y))
    expected = destandardise(standardise(test, x) @ reference.coef_.T, y)
    aligner = Aligner("ridge", alpha=alpha).fit(x, y)
    np.testing.assert_allclose(aligner.state["weight"], reference.coef_.T, atol=1e-8)
    np.testing.assert_allclose(aligner.transform(test), expected, atol=1e-8)


@pytest.mark.parametrize("d_x, d_y", MISMATCHED)
def test_ridge_default_alpha_is_the_source_width(d_x, d_y):
    x, y = paired(40, d_x, d_y)
    reference = Ridge(alpha=d_x, fit_intercept=False).fit(standardise(x, x), standardise(y, y))
    np.testing.assert_allclose(Aligner("ridge").fit(x, y).state["weight"], reference.coef_.T, atol=1e-8)


@pytest.mark.parametrize("n", [5, 40])  # minimum-norm (n < d_x, one rank lost to centring) and overdetermined
def test_ridge_tends_to_minimum_norm_linear_as_alpha_vanishes(n):
    x, y = paired(n, 12, 7)
    test = paired(10, 12, 7, seed=1)[0]
    linear = Aligner("linear").fit(x, y)
    gaps = [np.abs(Aligner("ridge", alpha=alpha).fit(x, y).transform(test) - linear.transform(test)).max()
            for alpha in (1.0, 1e-3, 1e-7)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-5


def test_ridge_shrinks_the_weights_as_alpha_grows():
    x, y = paired(30, 12, 7)
    x, y = standardise(x, x), standardise(y, y)
    norms = [np.linalg.norm(fit_ridge(x, y, alpha)) for alpha in (0.1, 1, 10, 100, 1e4)]
    assert all(a > b for a, b in zip(norms, norms[1:]))
    np.testing.assert_allclose(fit_ridge(x, y, 1e8), x.T @ y / 1e8, rtol=1e-5)  # W → xᵀy / α


def test_standard_stats_are_population_mean_and_std_with_constant_dims_unscaled():
    a = np.column_stack([np.arange(6.0), np.full(6, 4.0)])
    mean, scale = standard_stats(a)
    np.testing.assert_allclose(mean, [2.5, 4.0])
    np.testing.assert_allclose(scale, [np.std(np.arange(6.0), ddof=0), 1.0])


# --------------------------------------------------------------------------- affine by gradient descent


def reference_affine_gd(x, y, steps, lr, seed, dtype):
    """The plain loop of Maiorca et al.: nn.Linear + nn.MSELoss + Adam, autograd, global seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layer = nn.Linear(x.shape[1], y.shape[1], dtype=dtype)
    inputs, targets = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(layer(inputs), targets).backward()
        optimizer.step()
    return layer.weight.detach().T.double().numpy(), layer.bias.detach().double().numpy()


@pytest.mark.parametrize("n", [60, 6])  # statistics path (2n > d_x + 1) and residual path
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_affine_gd_follows_the_autograd_adam_trajectory(n, dtype, atol):
    x, y = paired(n, 12, 7)
    x, y = standardise(x, x), standardise(y, y)
    weight, bias = fit_affine_gd(x, y, steps=300, lr=1e-3, seed=3, dtype=dtype)
    ref_weight, ref_bias = reference_affine_gd(x, y, steps=300, lr=1e-3, seed=3, dtype=dtype)
    np.testing.assert_allclose(weight, ref_weight, atol=atol)
    np.testing.assert_allclose(bias, ref_bias, atol=atol)


def test_polar_factor_falls_back_when_the_fast_svd_does_not_converge(monkeypatch):
    x, y = paired(30, 12, 7)
    expected = fit_procrustes(x, y)

    def fails(*args, **kwargs):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(np.linalg, "svd", fails)
    np.testing.assert_allclose(fit_procrustes(x, y), expected, atol=1e-10)


def test_affine_gd_with_zero_steps_is_nn_linear_default_init():
    x, y = paired(20, 12, 7)
    weight, bias = fit_affine_gd(x, y, steps=0, seed=5)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        layer = nn.Linear(12, 7)
    np.testing.assert_array_equal(weight, layer.weight.detach().T.double().numpy())
    np.testing.assert_array_equal(bias, layer.bias.detach().double().numpy())
    assert np.abs(weight).max() <= 1 / math.sqrt(12)


def test_affine_gd_is_seeded_deterministic_and_leaves_global_rng_alone():
    x, y = paired(50, 12, 7)
    rng_state = torch.random.get_rng_state()
    first = Aligner("affine", seed=1).fit(x, y).state
    second = Aligner("affine", seed=1).fit(x, y).state
    other_seed = Aligner("affine", seed=2).fit(x, y).state
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    np.testing.assert_array_equal(first["weight"], second["weight"])
    assert not np.allclose(first["weight"], other_seed["weight"])


# --------------------------------------------------------------------------- planted maps


def planted_orthogonal(n: int, d_x: int, d_y: int, seed: int, noise: float = 0.01):
    """y = x Q + noise with Q (semi-)orthogonal; x isotropic, so the Procrustes optimum is Q."""
    rng = np.random.default_rng(seed)
    rotation = random_orthogonal(max(d_x, d_y), np.random.default_rng(100))[:d_x, :d_y]
    x = rng.standard_normal((n, d_x))
    return x, x @ rotation + noise * rng.standard_normal((n, d_y)), rotation


def planted_affine(n: int, d_x: int, d_y: int, seed: int, noise: float = 0.05):
    rng = np.random.default_rng(seed)
    fixed = np.random.default_rng(100)
    matrix, offset = fixed.standard_normal((d_x, d_y)) / math.sqrt(d_x), fixed.normal(0, 3, d_y)
    x = rng.standard_normal((n, d_x)) * fixed.uniform(0.5, 2, d_x) + fixed.normal(0, 1, d_x)
    return x, x @ matrix + offset + noise * rng.standard_normal((n, d_y)), (matrix, offset)


def held_out_errors(aligner_for, planted, counts, d_x, d_y):
    test_x, _, truth = planted(500, d_x, d_y, seed=99)
    clean = test_x @ truth if isinstance(truth, np.ndarray) else test_x @ truth[0] + truth[1]
    errors = []
    for n in counts:
        x, y, _ = planted(n, d_x, d_y, seed=n)
        errors.append(relative_error(aligner_for().fit(x, y).transform(test_x), clean))
    return errors


@pytest.mark.parametrize("kind", ["ortho", "l-ortho"])
@pytest.mark.parametrize("d_x, d_y", [(16, 10), (10, 16), (12, 12)])
def test_planted_orthogonal_map_is_recovered(kind, d_x, d_y):
    # Centring only: the plant is orthogonal in raw space, and per-dimension
    # standardisation of y = x Q would make it non-orthogonal when d_x < d_y.
    aligner_for = lambda: Aligner(kind, scaling="center")  # noqa: E731
    errors = held_out_errors(aligner_for, planted_orthogonal, (20, 100, 2000), d_x, d_y)
    assert errors[0] > errors[1] > errors[2]
    # Padded Procrustes into fewer dims converges slowest: its optimum is polar(xᵀx Q), Q only as xᵀx → n I.
    assert errors[2] < 0.1


@pytest.mark.parametrize("aligner_for", [
    lambda: Aligner("linear"),
    lambda: Aligner("affine", affine_fit="lstsq"),
    lambda: Aligner("affine", steps=1000, lr=1e-2),  # gradient descent run to convergence
], ids=["linear", "affine-lstsq", "affine-gd-long"])
@pytest.mark.parametrize("d_x, d_y", [(48, 32), (32, 48)])
def test_planted_affine_map_is_recovered(aligner_for, d_x, d_y):
    errors = held_out_errors(aligner_for, planted_affine, (60, 200, 1000), d_x, d_y)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


def test_default_affine_gd_improves_with_anchors_but_stops_short_in_300_steps():
    errors = held_out_errors(lambda: Aligner("affine"), planted_affine, (60, 200, 1000), 48, 32)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] > 0.1  # 300 Adam steps of 1e-3 do not reach the planted map: implicit regularisation


def test_least_squares_peaks_at_the_interpolation_threshold_and_ridge_does_not():
    """Isotropic anchors, y = x W + noise of the signal's size: the minimum-norm map's
    held-out error and norm peak where n - 1 (centring costs a rank) reaches d."""
    d = 32
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((d, d)) / math.sqrt(d)
    test_x = rng.standard_normal((1000, d))
    test_y = test_x @ truth + rng.standard_normal((1000, d))
    counts = (d // 4, d + 1, 4 * d)

    def mean_error_and_norm(kind, n):
        results = []
        for seed in range(5):
            draw = np.random.default_rng([seed, n])
            x = draw.standard_normal((n, d))
            aligner = Aligner(kind).fit(x, x @ truth + draw.standard_normal((n, d)))
            results.append((relative_error(aligner.transform(test_x), test_y), np.linalg.norm(aligner.state["weight"])))
        return np.mean(results, axis=0)

    linear = {n: mean_error_and_norm("linear", n) for n in counts}
    ridge = {n: mean_error_and_norm("ridge", n) for n in counts}
    quarter, threshold, four = counts
    assert linear[threshold][0] > 2 * max(linear[quarter][0], linear[four][0])
    assert linear[threshold][1] > 3 * max(linear[quarter][1], linear[four][1])
    assert ridge[quarter][0] > ridge[threshold][0] > ridge[four][0]
    assert ridge[threshold][0] < linear[threshold][0] / 2


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("d_x, d_y", [(10, 16), (12, 12)])
def test_ortho_preserves_norms_in_scaled_space(d_x, d_y):
    x, y = paired(40, d_x, d_y)
    test = standardise(paired(10, d_x, d_y, seed=1)[0], x)
    weight = Aligner("ortho").fit(x, y).state["weight"]
    np.testing.assert_allclose(np.linalg.norm(test @ weight, axis=1), np.linalg.norm(test, axis=1), rtol=1e-10)


def test_ortho_into_fewer_dims_only_shrinks_norms_in_scaled_space():
    x, y = paired(40, 16, 10)
    test = standardise(paired(10, 16, 10, seed=1)[0], x)
    weight = Aligner("ortho").fit(x, y).state["weight"]
    assert (np.linalg.norm(test @ weight, axis=1) <= np.linalg.norm(test, axis=1) + 1e-12).all()
    np.testing.assert_allclose(weight.T @ weight, np.eye(10), atol=1e-10)


def test_naive_is_identity_when_dims_match():
    x, y = paired(20, 8, 8)
    test = paired(5, 8, 8, seed=1)[0]
    np.testing.assert_array_equal(Aligner("naive").fit(x, y).transform(test), test)


def test_naive_pads_or_truncates_without_scaling():
    x, _ = paired(20, 8, 8)
    padded = Aligner("naive").fit(x, np.ones((20, 11))).transform(x)
    np.testing.assert_array_equal(padded, np.hstack([x, np.zeros((20, 3))]))
    truncated = Aligner("naive").fit(x, np.ones((20, 5))).transform(x)
    np.testing.assert_array_equal(truncated, x[:, :5])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scaling", SCALINGS)
def test_fitting_twice_gives_identical_maps(kind, scaling):
    x, y = paired(30, 12, 7)
    first = Aligner(kind, scaling).fit(x, y).transform(x)
    np.testing.assert_array_equal(Aligner(kind, scaling).fit(x, y).transform(x), first)
    assert first.shape == (30, 7)


@pytest.mark.parametrize("kind", KINDS)
def test_numpy_and_torch_paths_agree(kind):
    x, y = paired(30, 12, 7)
    aligner = Aligner(kind).fit(torch.from_numpy(x), torch.from_numpy(y))
    from_numpy = aligner.transform(x)
    from_torch = aligner.transform(torch.from_numpy(x))
    assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float64
    np.testing.assert_allclose(from_torch.numpy(), from_numpy, atol=1e-10)
    from_torch32 = aligner.transform(torch.from_numpy(x).float())
    assert from_torch32.dtype == torch.float32
    np.testing.assert_allclose(from_torch32.numpy(), from_numpy, rtol=1e-4, atol=1e-4)


def test_output_dtype_follows_input():
    x, y = paired(30, 12, 7)
    aligner = Aligner("linear").fit(x, y)
    assert aligner.transform(x.astype(np.float32)).dtype == np.float32
    assert aligner.transform(x).dtype == np.float64
    assert aligner.transform(np.rint(x).astype(np.int64)).dtype == np.float64
    assert aligner.transform(torch.from_numpy(np.rint(x).astype(np.int64))).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_device():
    x, y = paired(30, 12, 7)
    aligner = Aligner("ortho").fit(x, y)
    out = aligner.transform(torch.from_numpy(x).float().cuda())
    assert out.is_cuda and out.dtype == torch.float32
    np.testing.assert_allclose(out.cpu().numpy(), aligner.transform(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [40, 9])  # more anchors than dimensions, and fewer (minimum-norm / arbitrary completion)
@pytest.mark.parametrize("fit", [fit_linear, fit_procrustes, fit_l_ortho, lambda x, y, device=None: fit_ridge(x, y, 3.0, device),
                                 lambda x, y, device=None: np.vstack(fit_affine_lstsq(x, y, device))],
                         ids=["linear", "ortho", "l-ortho", "ridge", "affine-lstsq"])
def test_fits_on_a_torch_device_equal_the_host_fits(fit, n):
    """The device path (torch's SVD) is run here on the CPU: it must give the host
    path's map wherever the map is unique. Fewer anchors than dimensions leave
    ortho and l-ortho's completion to the SVD, so there only the fit on the anchors' span is compared."""
    x, y = paired(n, 12, 7)
    x, y = standardise(x, x), standardise(y, y)
    host, device = fit(x, y), fit(x, y, device="cpu")
    if n < 12 and fit in (fit_procrustes, fit_l_ortho):
        np.testing.assert_allclose(x @ device, x @ host, atol=1e-9)
    else:
        np.testing.assert_allclose(device, host, atol=1e-9)


@pytest.mark.parametrize("n", [60, 6])  # statistics path and residual path
def test_affine_gd_on_a_torch_device_follows_the_host_trajectory(n):
    x, y = paired(n, 12, 7)
    x, y = standardise(x, x), standardise(y, y)
    for host, device in zip(fit_affine_gd(x, y, seed=3), fit_affine_gd(x, y, seed=3, device="cpu")):
        np.testing.assert_allclose(device, host, atol=1e-5)


def test_a_device_svd_that_does_not_converge_falls_back_to_the_host(monkeypatch):
    x, y = paired(30, 12, 7)
    expected = fit_procrustes(x, y)

    def fails(*args, **kwargs):
        raise torch.linalg.LinAlgError("the algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "svd", fails)
    np.testing.assert_allclose(fit_procrustes(x, y, device="cpu"), expected, atol=1e-10)


def test_aligner_on_cpu_keeps_the_host_path_and_the_device_is_not_saved(tmp_path):
    x, y = paired(30, 12, 7)
    np.testing.assert_array_equal(Aligner("linear", device="cpu").fit(x, y).state["weight"], fit_linear(
        standardise(x, x), standardise(y, y)))
    Aligner("linear", device="cpu").fit(x, y).save(tmp_path / "a.npz")
    assert "device" not in Aligner.load(tmp_path / "a.npz").config()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["affine", "linear", "l-ortho", "ortho"])
def test_fits_on_cuda_agree_with_the_cpu(kind):
    x, y = paired(200, 12, 7)
    on_cpu = Aligner(kind, seed=1).fit(x, y).transform(x)
    np.testing.assert_allclose(Aligner(kind, seed=1, device="cuda").fit(x, y).transform(x), on_cpu, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_is_exact(kind, tmp_path):
    x, y = paired(30, 12, 7)
    aligner = Aligner(kind, scaling="center", seed=4, steps=50).fit(x, y)
    path = tmp_path / "aligner.npz"
    aligner.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert "weight" in data.files and data["weight"].shape == (12, 7)
    loaded = Aligner.load(path)
    assert loaded.config() == aligner.config()
    np.testing.assert_array_equal(loaded.transform(x), aligner.transform(x))


def test_ridge_alpha_round_trips_and_older_files_still_load(tmp_path):
    x, y = paired(30, 12, 7)
    aligner = Aligner("ridge", alpha=2.5).fit(x, y)
    path = tmp_path / "ridge.npz"
    aligner.save(path)
    loaded = Aligner.load(path)
    assert loaded.alpha == 2.5 and loaded.config() == aligner.config()
    np.testing.assert_array_equal(loaded.transform(x), aligner.transform(x))

    older = tmp_path / "older.npz"
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    config = json.loads(str(arrays["config"]))
    del config["alpha"]
    config["kind"] = "linear"
    config["precision"] = "bf16"  # written when the affine fit had a precision option
    np.savez(older, **{**arrays, "config": np.array(json.dumps(config))})
    assert Aligner.load(older).config() == Aligner("linear").config()


# --------------------------------------------------------------------------- edge cases


def rank_deficient(n, d_x, d_y):
    x, y = paired(n, d_x, d_y)
    x[:, 1] = 2 * x[:, 0]  # a duplicated direction
    x[n // 2:] = x[: n - n // 2]  # repeated rows
    return x, y


def with_constant_dims(n, d_x, d_y):
    x, y = paired(n, d_x, d_y)
    x[:, 2], y[:, 3] = 5.0, -1.0
    return x, y


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("make", [
    lambda: paired(2, 12, 7),
    lambda: paired(2, 7, 12),
    lambda: rank_deficient(20, 12, 7),
    lambda: with_constant_dims(20, 7, 12),
    lambda: paired(5, 30, 40),
], ids=["two-anchors-12to7", "two-anchors-7to12", "rank-deficient", "constant-dims", "n<d"])
def test_degenerate_anchors_give_finite_output(kind, make):
    x, y = make()
    out = Aligner(kind).fit(x, y).transform(paired(9, x.shape[1], y.shape[1], seed=1)[0])
    assert out.shape == (9, y.shape[1])
    assert np.isfinite(out).all()


def test_constant_target_dimension_is_reproduced():
    x, y = with_constant_dims(20, 7, 12)
    out = Aligner("linear").fit(x, y).transform(paired(9, 7, 12, seed=1)[0])
    np.testing.assert_allclose(out[:, 3], -1.0)


# --------------------------------------------------------------------------- bad input


def fitted():
    return Aligner("linear").fit(*paired(10, 4, 3))


X4, Y3 = paired(10, 4, 3)


@pytest.mark.parametrize("call, match", [
    (lambda: Aligner("rotate"), r"unknown kind 'rotate'; valid: affine, linear, l-ortho, ortho, ridge, naive"),
    (lambda: Aligner("ridge", alpha=0), r"alpha must be a finite number > 0; got 0"),
    (lambda: Aligner("ridge", alpha=float("nan")), r"alpha must be a finite number > 0; got nan"),
    (lambda: fit_ridge(X4, Y3, -1), r"alpha must be a finite number > 0; got -1"),
    (lambda: Aligner(scaling="minmax"), r"unknown scaling 'minmax'; valid: standard, center, none"),
    (lambda: Aligner(affine_fit="sgd"), r"unknown affine_fit 'sgd'"),
    (lambda: Aligner().fit(X4, Y3[:9]), r"x_anchor has 10 rows but y_anchor has 9"),
    (lambda: Aligner().fit(X4[:1], Y3[:1]), r"at least 2 anchors.*got 1"),
    (lambda: Aligner().fit(X4[:, 0], Y3), r"x_anchor must be a 2-D array.*\(10,\)"),
    (lambda: Aligner().fit(X4, Y3[None]), r"y_anchor must be a 2-D array"),
    (lambda: Aligner().fit(np.where(X4 > 1, np.nan, X4), Y3), r"x_anchor contains NaN or inf"),
    (lambda: Aligner().fit(X4, np.full_like(Y3, np.inf)), r"y_anchor contains NaN or inf"),
    (lambda: Aligner().transform(X4), r"not fitted"),
    (lambda: Aligner().save("unused.npz"), r"not fitted"),
    (lambda: fitted().transform(Y3), r"expected 4 columns.*got 3"),
    (lambda: fitted().transform(torch.from_numpy(Y3)), r"expected 4 columns.*got 3"),
    (lambda: fitted().transform(X4[0]), r"x must be a 2-D array"),
    (lambda: fitted().transform(np.full_like(X4, np.nan)), r"x contains NaN or inf"),
    (lambda: fitted().transform(torch.full((2, 4), float("inf"))), r"x contains NaN or inf"),
    (lambda: fit_affine_gd(X4, Y3, lr=0), r"lr > 0"),
    (lambda: fit_affine_lstsq(X4, Y3[:5]), r"x_anchor has 10 rows but y_anchor has 5"),
])
def test_bad_input_raises_value_error_naming_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_loading_a_foreign_npz_names_the_missing_arrays(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weight=np.eye(3))
    with pytest.raises(ValueError, match=r"not a saved Aligner: missing config, x_mean"):
        Aligner.load(path)


# --------------------------------------------------------------------------- anchor selection


@pytest.mark.parametrize("strategy, extra", [
    ("random", {"pool_size": 500}),
    ("stratified", {"labels": np.arange(500) % 3}),
    ("diverse", {"features": np.random.default_rng(0).standard_normal((500, 4))}),
])
def test_select_anchors_is_deterministic_per_seed_and_varies_across_seeds(strategy, extra):
    first = select_anchors(40, strategy, seed=1, **extra)
    assert first.shape == (40,) and len(np.unique(first)) == 40
    assert first.min() >= 0 and first.max() < 500
    np.testing.assert_array_equal(select_anchors(40, strategy, seed=1, **extra), first)
    assert not np.array_equal(select_anchors(40, strategy, seed=2, **extra), first)


def test_stratified_keeps_class_proportions():
    labels = np.repeat(["a", "b", "c"], [600, 300, 100])
    chosen = select_anchors(50, "stratified", labels=labels)
    _, counts = np.unique(labels[chosen], return_counts=True)
    np.testing.assert_array_equal(counts, [30, 15, 5])


def test_stratified_hands_leftover_anchors_to_largest_remainders():
    labels = np.repeat([0, 1, 2], [5, 3, 2])  # quotas 3.5, 2.1, 1.4 for n = 7
    counts = np.bincount(labels[select_anchors(7, "stratified", labels=labels)], minlength=3)
    np.testing.assert_array_equal(counts, [4, 2, 1])


def test_diverse_covers_every_cluster_where_random_misses_some():
    rng = np.random.default_rng(0)
    sizes = [500, 20, 20, 20, 20]  # one large cluster and four small ones
    centres = rng.normal(0, 50, (5, 3))
    features = np.vstack([c + rng.standard_normal((s, 3)) for c, s in zip(centres, sizes)])
    cluster = np.repeat(np.arange(5), sizes)
    diverse_hits = [len(set(cluster[select_anchors(5, "diverse", seed=s, features=features)])) for s in range(10)]
    random_hits = [len(set(cluster[select_anchors(5, seed=s, pool_size=len(features))])) for s in range(10)]
    assert min(diverse_hits) == 5
    assert np.mean(random_hits) < 4


def test_select_anchors_diverse_never_repeats_duplicates():
    features = np.repeat(np.eye(3), 4, axis=0)  # 3 distinct points, 4 copies each
    chosen = select_anchors(6, "diverse", features=features)
    assert len(np.unique(chosen)) == 6


@pytest.mark.parametrize("call, match", [
    (lambda: select_anchors(11, pool_size=10), r"n=11 anchors from a pool of 10"),
    (lambda: select_anchors(0, pool_size=10), r"n=0 anchors from a pool of 10"),
    (lambda: select_anchors(5, "stratified", pool_size=10), r"'stratified' needs labels"),
    (lambda: select_anchors(5, "diverse", pool_size=10), r"'diverse' needs features"),
    (lambda: select_anchors(5, "kmeans", pool_size=10), r"unknown strategy 'kmeans'; valid: random, stratified"),
    (lambda: select_anchors(5), r"give pool_size, labels or features"),
    (lambda: select_anchors(5, labels=[0] * 10, pool_size=12), r"inconsistent pool sizes"),
])
def test_select_anchors_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
