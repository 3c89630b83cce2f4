"""The incremental grid posterior must equal an exact GP posterior computed by BoTorch."""

import gpytorch
import torch
from botorch.models import SingleTaskGP

from captum_borex.bo.surrogate import GridPosterior, fit_lengthscales, make_kernel


def botorch_posterior(kernel, x, residuals, noise, test):
    model = SingleTaskGP(
        x,
        residuals.unsqueeze(-1),
        train_Yvar=torch.full_like(residuals.unsqueeze(-1), noise),
        covar_module=kernel,
        mean_module=gpytorch.means.ZeroMean(batch_shape=x.shape[:1]),
        outcome_transform=None,
    ).eval()
    with torch.no_grad():
        post = model.posterior(test.unsqueeze(-2).transpose(0, 1))
    return post.mean[..., 0, 0].T, post.variance[..., 0, 0].T


def test_incremental_posterior_matches_exact_gp():
    torch.manual_seed(0)
    batch, d = 3, 3
    grid = torch.rand(40, d, dtype=torch.float64) * 50
    prior = torch.randn(batch, 40, dtype=torch.float64) * 0.1
    kernel = make_kernel(batch, torch.tensor([12.0, 9.0, 10.0]), (1.0, 20.0))
    kernel.requires_grad_(False)
    post = GridPosterior(kernel, 0.01, grid, prior, capacity=10)
    xs = torch.rand(batch, 10, d, dtype=torch.float64) * 50
    residuals = torch.randn(batch, 10, dtype=torch.float64)
    # One window, then three at once (believer), then the rest one by one.
    for lo, hi in [(0, 1), (1, 4), (4, 5), (5, 10)]:
        post.extend(xs[:, lo:hi])
        post.set_residuals(residuals[:, :hi])
    mean, var = botorch_posterior(kernel, xs, residuals, 0.01, grid.expand(batch, -1, -1))
    torch.testing.assert_close(post.mean, prior + mean, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(post.variance, var, atol=1e-8, rtol=1e-6)
    point_mean, point_var = post.predict(grid[:5].expand(batch, -1, -1), prior[:, :5])
    torch.testing.assert_close(point_mean, post.mean[:, :5])
    torch.testing.assert_close(point_var, post.variance[:, :5])


def test_believer_extension_keeps_mean_and_shrinks_variance():
    torch.manual_seed(1)
    kernel = make_kernel(2, torch.tensor([5.0, 5.0]), (1.0, 20.0))
    grid = torch.rand(30, 2, dtype=torch.float64) * 20
    post = GridPosterior(kernel, 0.01, grid, torch.zeros(2, 30, dtype=torch.float64), capacity=4)
    post.extend(torch.rand(2, 1, 2, dtype=torch.float64) * 20)
    post.set_residuals(torch.tensor([[0.5], [-0.3]], dtype=torch.float64))
    mean, var = post.mean.clone(), post.variance.clone()
    post.extend(torch.rand(2, 2, 2, dtype=torch.float64) * 20)
    torch.testing.assert_close(post.mean, mean)
    assert bool((post.variance <= var + 1e-12).all())


def test_refit_after_refactor_matches_fresh_posterior():
    torch.manual_seed(2)
    batch = 2
    kernel = make_kernel(batch, torch.tensor([12.0, 12.0, 10.0]), (1.0, 20.0))
    grid = torch.rand(25, 3, dtype=torch.float64) * 60
    post = GridPosterior(kernel, 0.01, grid, torch.zeros(batch, 25, dtype=torch.float64), 12)
    xs = torch.rand(batch, 12, 3, dtype=torch.float64) * 60
    residuals = torch.sin(xs[..., 0] / 10) + 0.05 * torch.randn(batch, 12, dtype=torch.float64)
    post.extend(xs)
    post.set_residuals(residuals)
    kernel.requires_grad_(True)
    fit_lengthscales(kernel, xs, residuals, 0.01)
    assert not torch.allclose(
        kernel.lengthscale, torch.tensor([12.0, 12.0, 10.0], dtype=torch.float64)
    )
    post.refactor()
    mean, var = botorch_posterior(kernel, xs, residuals, 0.01, grid.expand(batch, -1, -1))
    torch.testing.assert_close(post.mean, mean, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(post.variance, var, atol=1e-8, rtol=1e-6)


def test_length_scale_fit_is_independent_per_batch_element():
    torch.manual_seed(3)
    xs = torch.rand(3, 15, 3, dtype=torch.float64) * 60
    residuals = torch.cos(xs[..., 1] / 8)
    kernel = make_kernel(3, torch.tensor([12.0, 12.0, 10.0]), (1.0, 20.0))
    fit_lengthscales(kernel, xs, residuals, 0.01)
    alone = make_kernel(1, torch.tensor([12.0, 12.0, 10.0]), (1.0, 20.0))
    fit_lengthscales(alone, xs[1:2], residuals[1:2], 0.01)
    torch.testing.assert_close(kernel.lengthscale[1], alone.lengthscale[0], atol=1e-4, rtol=1e-4)


def test_lattice_covariance_equals_the_gpytorch_kernel():
    from captum_borex.bo.surrogate import lattice_covariance
    from captum_borex.bo.windows import WindowSpace

    for space in (
        WindowSpace((20, 14), [(2, 3, 5)], (0, 0), (0.5, 0.5)),
        WindowSpace((5, 12, 10), [(1, 2), (2, 4)], (0, 1, 1), (0.25, 0.5, 0.5)),
    ):
        grid = space.grid((3,) * space.n_axes)
        kernel = make_kernel(
            2, torch.rand(space.n_features, dtype=torch.float64) * 10 + 1, (1.0, 20.0)
        )
        x = torch.rand(2, 4, space.n_features, dtype=torch.float64) * 30
        expected = kernel.forward(x, grid.features.expand(2, -1, -1)).detach()
        torch.testing.assert_close(
            lattice_covariance(kernel.lengthscale, x, grid.lattice).detach(), expected
        )
