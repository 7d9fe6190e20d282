"""What channels_last costs the CPU kernels: `python -m benchmarks.cpu_layout_cost`.

One table, a row per dtype: the time of the op's forward and backward (training, both raw ops,
no autograd) on a contiguous input, on a channels_last input walked in place (the CPU kernels
gather each chunk into a cached buffer, csrc/cpu/chunk_arrays.h), and on a channels_last input
handled as the glue did before issue 18 ("copied": contiguous copies of x, alpha_logit and
grad_z, the kernels run on those, the outputs copied back into the caller's memory format),
with the ratios to contiguous.  The copies are made here, around the contiguous op, exactly as
the old glue made them, so one run of one build compares the two.  Times are the process's CPU
time (time.process_time) on one thread by default, the minimum of interleaved rounds: on a
shared machine wall times varied 2x from run to run, CPU time by about 5%.
"""

import argparse
import time

import torch

import infodrop  # noqa: F401  (registers torch.ops.infodrop)
from infodrop.testing import DTYPES, make_grads, make_inputs

FORWARD = torch.ops.infodrop.information_dropout.default
BACKWARD = torch.ops.infodrop.information_dropout_backward.default


def _options(dtype):
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    return (torch.tensor(7), 0, torch.tensor(0.0, dtype=compute), torch.tensor(1.0, dtype=compute),
            "log_uniform", 0.7, 1e-3, False, False, True)


def _in_place(x, logit, grad_z, grad_kl, options):
    z, _ = FORWARD(x, logit, *options)
    grad_x, grad_logit, _, _ = BACKWARD(grad_z, grad_kl, x, logit, *options)
    return z, grad_x, grad_logit


def _copied(x, logit, grad_z, grad_kl, options):
    xc, lc = x.contiguous(), logit.contiguous()
    z, _ = FORWARD(xc, lc, *options)
    z = torch.empty_like(x).copy_(z)
    gx, gl, _, _ = BACKWARD(grad_z.contiguous(), grad_kl, x.contiguous(), logit.contiguous(),
                            *options)
    return z, torch.empty_like(x).copy_(gx), torch.empty_like(logit).copy_(gl)


def measure(shape, dtype, rounds):
    x, logit = make_inputs(shape, dtype)
    grad_z, grad_kl = make_grads(shape, dtype)
    options = _options(dtype)
    last = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    as_last = [t.contiguous(memory_format=last) for t in (x, logit, grad_z)]
    cases = {"contiguous": (_in_place, (x, logit, grad_z)),
             "channels_last": (_in_place, as_last),
             "copied": (_copied, as_last)}
    times = {name: [] for name in cases}
    for _ in range(rounds + 1):  # the first round warms caches and the allocator
        for name, (step, (xs, ls, gs)) in cases.items():
            start = time.process_time()
            step(xs, ls, gs, grad_kl, options)
            times[name].append(time.process_time() - start)
    return {name: min(t[1:]) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="32x256x28x28",
                        help="NCHW or NCDHW dimensions (default: a ResNet-50 layer2 "
                             "activation at batch 32)")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU time counts every thread's, spin-waits included")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = tuple(int(d) for d in args.shape.split("x"))
    print(f"forward + backward, training, {args.shape}, {torch.get_num_threads()} threads, "
          f"cpu_isa={torch.ops.infodrop.cpu_isa()}, CPU time (min of {args.rounds})")
    print(f"{'dtype':<9} {'contiguous':>11} {'in place':>9} {'copied':>9} "
          f"{'in place/contig':>16} {'copied/contig':>14}")
    for name in args.dtypes.split(","):
        t = measure(shape, DTYPES[name], args.rounds)
        c = t["contiguous"]
        print(f"{name:<9} {c * 1e3:9.2f}ms {t['channels_last'] * 1e3:7.2f}ms "
              f"{t['copied'] * 1e3:7.2f}ms {t['channels_last'] / c:16.3f} {t['copied'] / c:14.3f}")


if __name__ == "__main__":
    main()
