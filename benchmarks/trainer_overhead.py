"""The shared trainer against a bare PyTorch loop: same model, data, batches and number of steps.

    python benchmarks/trainer_overhead.py [--steps 3000] [--repeats 5]

Both loops keep the data on the device and draw batches from a device-side permutation; the bare loop
is the minimum any training needs (forward, backward, step). After one untimed warm-up of each, every
repeat times both, alternating which goes first, and the printed ratio is the median of trainer / bare
over the repeats. Goal: <= 1.10.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from replikit import data, models, train


def setup(device):
    ds = data.load("mnist1d")
    x = torch.as_tensor(ds.x_train, device=device)
    y = torch.as_tensor(ds.y_train, device=device)
    torch.manual_seed(0)
    model = models.build("cnn1d", ds.input_shape, 10, width=64).to(device)
    return x, y, model


def bare(x, y, model, epochs, batch, device):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)
    steps = len(x) // batch
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), device=device, generator=gen)
        for b in range(steps):
            idx = perm[b * batch : (b + 1) * batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def replikit_fit(x, y, model, epochs, batch, device):
    step = lambda idx, p: F.cross_entropy(model(x[idx]), y[idx])  # noqa: E731
    train.fit(
        step,
        model.parameters(),
        len(x),
        epochs=epochs,
        batch_size=batch,
        seed=0,
        device=device,
        lr=1e-3,
        models=[model],
    )
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = train.resolve_device("auto")
    for fn in (bare, replikit_fit):  # warm-up: allocator, kernels, lazy imports
        fn(*setup(device), 1, args.batch, device)
    ratios, times = [], {"bare": [], "replikit": []}
    for r in range(args.repeats):
        order = [("bare", bare), ("replikit", replikit_fit)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            x, y, model = setup(device)
            t = time.perf_counter()
            fn(x, y, model, args.epochs, args.batch, device)
            times[name].append(time.perf_counter() - t)
        ratios.append(times["replikit"][-1] / times["bare"][-1])
    steps = args.epochs * (len(x) // args.batch)
    print(
        f"device {device}, {torch.get_num_threads()} thread(s), {steps} steps of batch {args.batch}, cnn1d on MNIST-1D"
    )
    for name, ts in times.items():
        print(
            f"  {name:9s} median {statistics.median(ts):.2f} s  ({1e3 * statistics.median(ts) / steps:.2f} ms/step)"
        )
    print(
        f"  ratio replikit / bare: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


if __name__ == "__main__":
    main()
