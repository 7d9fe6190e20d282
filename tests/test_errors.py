"""Bad input gets a clear error that names the argument (or a defined result)."""

import pytest
import torch

import infodrop

from ._helpers import requires_compiled

X = torch.rand(2, 3)
L = torch.zeros(2, 3)


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(alpha_logit=torch.zeros(2, 4)), ValueError, "alpha_logit must have the shape"),
    (dict(alpha_logit=torch.zeros(2, 3, dtype=torch.float64)), TypeError, "alpha_logit must have the dtype"),
    (dict(alpha_logit=torch.zeros(2, 3, device="meta")), ValueError, "alpha_logit must be on the device"),
    (dict(x=torch.ones(2, 3, dtype=torch.int64), alpha_logit=torch.ones(2, 3, dtype=torch.int64)),
     TypeError, "x must be a floating-point"),
    (dict(x=[1.0, 2.0]), TypeError, "x must be a torch.Tensor"),
    (dict(x=torch.tensor(1.0), alpha_logit=torch.tensor(0.0)), ValueError, "batch dimension"),
    (dict(max_alpha=0.0), ValueError, "max_alpha must be > 0"),
    (dict(max_alpha=float("nan")), ValueError, "max_alpha must be finite"),
    (dict(alpha_min=-1e-3), ValueError, "alpha_min must be >= 0"),
    (dict(prior="log_normal", sigma=0.0), ValueError, "sigma must be > 0"),
    (dict(prior="log_normal", sigma=torch.tensor(-1.0)), ValueError, "sigma must be > 0"),
    (dict(mu=torch.zeros(2)), ValueError, "mu must be a number or a one-element"),
    (dict(prior="log_normal", sigma=torch.tensor(float("nan"))), ValueError, "sigma must be finite"),
    (dict(prior="log_normal", sigma=torch.tensor(float("inf"))), ValueError, "sigma must be finite"),
    (dict(prior="log_normal", mu=torch.tensor(float("nan"))), ValueError, "mu must be finite"),
    (dict(prior="log_normal", mu=float("-inf")), ValueError, "mu must be finite"),
    (dict(training="False"), TypeError, "training must be a bool"),
    (dict(mask_inactive=1), TypeError, "mask_inactive must be a bool"),
    (dict(mu="0"), TypeError, "mu must be a real number"),
    (dict(prior="gaussian"), ValueError, "prior must be one of"),
    (dict(seed=-3), ValueError, "seed must be in"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(offset=2**64), ValueError, "offset must be in"),
    (dict(generator=3), TypeError, "generator must be a torch.Generator"),
    (dict(logit_bias=torch.zeros(2)), ValueError, r"logit_bias must have shape \(3,\), one value per"),
    (dict(logit_bias=torch.zeros(1, 3)), ValueError, r"logit_bias must have shape \(3,\)"),
    (dict(logit_bias=torch.zeros(3, dtype=torch.int64)), TypeError, "logit_bias must be a floating-point"),
    (dict(logit_bias=torch.zeros(3, device="meta")), ValueError, "logit_bias must be on the device of x"),
    (dict(logit_bias=[0.0, 0.0, 0.0]), TypeError, "logit_bias must be None or a torch.Tensor"),
    (dict(x=torch.rand(3), alpha_logit=torch.zeros(3), logit_bias=torch.zeros(1)), ValueError,
     r"logit_bias needs an x with channels \(dim 1\)"),
])
def test_bad_arguments(backend, kwargs, error, pattern):
    args = dict(x=X, alpha_logit=L, backend=backend)
    args.update(kwargs)
    x, logit = args.pop("x"), args.pop("alpha_logit")
    with pytest.raises(error, match=pattern):
        infodrop.information_dropout(x, logit, **args)


def test_unknown_or_unavailable_backend():
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        infodrop.information_dropout(X, L, backend="tpu")
    unavailable = [name for name, ok in infodrop.backends().items() if not ok]
    for name in unavailable:
        with pytest.raises(RuntimeError, match=f"backend '{name}' is not available here; available"):
            infodrop.information_dropout(X, L, backend=name)


def test_noise_names_what_is_available_for_a_device_that_is_not_there(monkeypatch):
    """noise() takes a device, not tensors already on it: backend='cuda' or 'triton' for
    device='cuda' where no GPU is visible must raise infodrop's error, which says what can run,
    not the driver's from the first allocation (the explicit backends' fast path in resolve()
    holds for a call's tensors only)."""
    from infodrop import _backends

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a GPU machine too
    # triton under the interpreter runs anywhere: the device is then torch's to refuse
    names = [name for name in ("cuda", "triton") if _backends._built(name)
             and not (name == "triton" and _backends.TRITON_INTERPRETED)]
    if not names:
        pytest.skip("neither the CUDA extension nor triton is installed here")
    for name in names:
        with pytest.raises(RuntimeError, match=f"backend '{name}' is not available here; available"):
            infodrop.noise((4,), 1, device="cuda", backend=name)


@requires_compiled
def test_direct_op_calls_are_checked_too():
    args = [X, L, torch.tensor(1), 0, torch.tensor(0.0), torch.tensor(1.0), "log_uniform", 0.7,
            1e-3, False, False, True]
    bad = list(args)
    bad[1] = torch.zeros(3, 2)
    with pytest.raises(RuntimeError, match="alpha_logit must have the shape"):
        torch.ops.infodrop.information_dropout(*bad)
    bad = list(args)
    bad[6] = "uniform"
    with pytest.raises(RuntimeError, match="prior must be"):
        torch.ops.infodrop.information_dropout(*bad)
    bad = list(args)
    bad[2] = torch.tensor(1.0)
    with pytest.raises(RuntimeError, match="seed must be a one-element int64"):
        torch.ops.infodrop.information_dropout(*bad)
    bad = list(args)
    bad[7] = -1.0
    with pytest.raises(RuntimeError, match="max_alpha must be a positive"):
        torch.ops.infodrop.information_dropout(*bad)
    with pytest.raises(RuntimeError, match=r"logit_bias must have shape \(3,\)"):
        torch.ops.infodrop.information_dropout(*args, torch.zeros(2))
    grads = [torch.ones(2, 3), torch.ones(2)]
    with pytest.raises(RuntimeError, match=r"logit_bias must have shape \(3,\)"):
        torch.ops.infodrop.information_dropout_backward(*grads, *args, torch.zeros(4))


def test_empty_batch_is_valid():
    for backend in ("auto", "reference"):
        z, kl = infodrop.information_dropout(torch.rand(0, 4), torch.zeros(0, 4), backend=backend)
        assert z.shape == (0, 4) and kl.shape == (0,)
