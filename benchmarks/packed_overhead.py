"""The packed trainer against a bare vmapped loop: same pack, data, batches and number of steps.

    python benchmarks/packed_overhead.py [--model mlp] [--width 8] [--repeats 5]
    python benchmarks/packed_overhead.py --device cuda --model cnn1d --width 16

``replikit.packed.fit`` trains ``width`` runs as one vmapped model. The bare loop is the least any packed
training needs: the stacked parameters (``torch.func.stack_module_state``), one vmapped forward of
(parameters, batch), one cross-entropy over the flattened pack (fewer operations than a vmapped one),
the summed loss's backward, one optimiser step, each member's batch from its own
device-side permutation, and one host sync per epoch (the loss). Both use torch's own Adam. After one
untimed warm-up of each, every repeat times both, alternating which goes first; the printed ratio is the
median of packed / bare over the repeats (goal: <= 1.10, as ``trainer_overhead.py``'s for ``train.fit``).
``--rates`` gives every member its own learning rate in ``packed.fit`` (what gradnorm and model_soups
use), against the same bare loop: the cost of that feature.

On the CPU a small model's step is dominated by per-operation overhead, as a GPU's is by kernel
launches, so the CPU ratio is the first estimate of the packed trainer's overhead on a GPU.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the GPU machine may run this without installing replikit
os.environ.setdefault("REPLIKIT_PROGRESS", "0")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.func import functional_call, stack_module_state, vmap  # noqa: E402

from replikit import data, models, packed, train  # noqa: E402

LR = 1e-3


def setup(device: torch.device, model: str, width: int, n: int | None):
    ds = data.load("mnist1d")
    x = torch.as_tensor(ds.x_train[:n], device=device)
    y = torch.as_tensor(ds.y_train[:n], device=device)
    members = []
    for seed in range(width):
        torch.manual_seed(seed)
        members.append(models.build(model, ds.input_shape, 10, width=32).to(device))
    return x, y, members


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare(x, y, members, epochs: int, batch: int, device: torch.device, rates: bool = False) -> list[float]:
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")

    def logits(p, b, xb):
        return functional_call(base, (p, b), (xb,))

    def per_member(p, b, xb, yb):  # one cross-entropy over the flattened pack, as packed.fit computes it
        out = vmap(logits)(p, b, xb)
        return F.cross_entropy(out.flatten(0, 1), yb.flatten(), reduction="none").view(yb.shape).mean(1)

    opt = torch.optim.Adam(list(params.values()), lr=LR)
    gens = [torch.Generator(device=device).manual_seed(s) for s in range(len(members))]
    steps = len(x) // batch
    means = []
    for _ in range(epochs):
        perms = torch.stack([torch.randperm(len(x), device=device, generator=g) for g in gens])
        sums = torch.zeros(len(members), device=device)
        for b in range(steps):
            idx = perms[:, b * batch : (b + 1) * batch]
            losses = per_member(params, buffers, x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            sums += losses.detach()
        means = (sums / steps).tolist()  # the epoch's one host sync
    sync(device)
    return means


def replikit_packed(x, y, members, epochs: int, batch: int, device: torch.device, rates: bool = False):
    n = len(members)
    _, histories = packed.fit(
        members,
        [packed.Batches(torch.arange(len(x), device=device), batch, s).next for s in range(n)],
        x,
        y,
        epochs=epochs,
        steps_per_epoch=len(x) // batch,
        width=n,
        lr=[LR * (1 + i / n) for i in range(n)] if rates else LR,
    )
    sync(device)
    return [h[-1]["train_loss"] for h in histories]


def measure(args, device: torch.device) -> dict:
    fns = {"bare": bare, "packed": replikit_packed}
    for fn in fns.values():  # warm-up: allocator, kernels, lazy imports
        fn(*setup(device, args.model, args.width, args.n), 1, args.batch, device, args.rates)
    times: dict[str, list[float]] = {k: [] for k in fns}
    ratios = []
    for r in range(args.repeats):
        order = list(fns.items())
        for name, fn in order if r % 2 == 0 else order[::-1]:
            x, y, members = setup(device, args.model, args.width, args.n)
            t = time.perf_counter()
            fn(x, y, members, args.epochs, args.batch, device, args.rates)
            times[name].append(time.perf_counter() - t)
        ratios.append(times["packed"][-1] / times["bare"][-1])
    steps = args.epochs * (len(x) // args.batch)
    return {"steps": steps, "times": times, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="mlp", help="mlp or cnn1d (width 32)")
    parser.add_argument("--width", type=int, default=8, help="runs in the pack")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n", type=int, default=None, help="training examples (default: all 4,000)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rates", action="store_true", help="packed.fit with one learning rate per member")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = train.resolve_device(args.device)
    m = measure(args, device)
    print(
        f"device {device}, {torch.get_num_threads()} thread(s), a pack of {args.width} {args.model}s, "
        f"{m['steps']} steps of batch {args.batch} on MNIST-1D{', own learning rates' if args.rates else ''}"
    )
    for name, ts in m["times"].items():
        med = statistics.median(ts)
        print(f"  {name:7s} median {med:.2f} s  ({1e3 * med / m['steps']:.2f} ms/step)")
    r = m["ratios"]
    print(f"  ratio packed / bare: median {statistics.median(r):.3f} (min {min(r):.3f}, max {max(r):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
