"""``train.fit`` against the best bare PyTorch loop: ResNet-18 on CIFAR-10 shapes, images per second.

    python benchmarks/gpu_throughput.py                       # on the GPU machine (a few minutes)
    python benchmarks/gpu_throughput.py --device cpu --quick  # a tiny CPU run (tested)

50,000 random 3x32x32 images resident on the device, batch 512, SGD (momentum 0.9), bf16 autocast on
CUDA, the suite's ResNet-18 (``models.build("resnet18")``). Bare loops: plain (NCHW), channels_last, and
channels_last + ``torch.compile``; then ``train.fit`` with ``train.prepare_model`` (channels_last on
CUDA), without and with compile. Each variant gets a fresh model (same init), one untimed warm-up
epoch (compilation, cuDNN autotuning), then ``--epochs`` timed epochs. Goal (issue 9, on an H200):
``train.fit`` >= 0.9 x the best bare loop and >= 2 x 25.4k images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("REPLIKIT_PROGRESS", "0")

import torch  # noqa: E402  (after the sys.path insert above)
import torch.nn.functional as F  # noqa: E402

from replikit import models, train  # noqa: E402

GOAL_FACTOR, BASELINE = 2.0, 25_400  # images/s: the target is 2 x 25.4k


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_model(device: torch.device, channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = models.build("resnet18", (3, 32, 32), 10).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


def bare_epochs(model, x, y, batch: int, epochs: int, device: torch.device, gen: torch.Generator) -> None:
    """The minimum any training needs: device permutation, slice, forward, backward, step."""
    opt = sgd(model)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    steps = len(x) // batch
    for _ in range(epochs):
        perm = torch.randperm(len(x), device=device, generator=gen)
        for b in range(steps):
            idx = perm[b * batch : (b + 1) * batch]
            with autocast:
                loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def timed(run, epochs: int, warmup: int, device: torch.device) -> float:
    """Seconds of ``run(epochs)`` after ``run(warmup)``."""
    run(warmup)
    sync(device)
    t0 = time.perf_counter()
    run(epochs)
    sync(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="16 images, batch 8, no compile (CPU tests)")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per variant")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--out", default="", help="also write the table as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.batch, args.epochs, args.no_compile = 16, 8, 1, True

    device = train.resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "cpu"
    print(f"device {name} | torch {torch.__version__} | CUDA {torch.version.cuda}", flush=True)
    g = torch.Generator(device=device).manual_seed(0)
    x_plain = torch.rand(args.n, 3, 32, 32, device=device, generator=g)
    y = torch.randint(0, 10, (args.n,), device=device, generator=g)
    x_last = x_plain.contiguous(memory_format=torch.channels_last)
    x_fit = train.to_device(x_plain, device)  # what a method's data looks like (channels_last on CUDA)
    images = args.epochs * (args.n // args.batch) * args.batch

    def bare(channels_last: bool, compile: bool):
        model = fresh_model(device, channels_last)
        if compile:
            model.compile()
        x = x_last if channels_last else x_plain
        gen = torch.Generator(device=device).manual_seed(1)
        return lambda e: bare_epochs(model, x, y, args.batch, e, device, gen)

    def fit(compile: bool):
        model = train.prepare_model(fresh_model(device, False), device, compile=compile)
        opt = sgd(model)

        def step(idx, p):
            return F.cross_entropy(model(x_fit[idx]), y[idx])

        return lambda e: train.fit(
            step, opt, args.n, epochs=e, batch_size=args.batch, seed=1, device=device, models=[model]
        )

    variants = [
        ("bare, plain", lambda: bare(False, False)),
        ("bare, channels_last", lambda: bare(True, False)),
    ]
    if not args.no_compile:
        variants.append(("bare, channels_last + compile", lambda: bare(True, True)))
    variants.append(("train.fit (prepare_model)", lambda: fit(False)))
    if not args.no_compile:
        variants.append(("train.fit (prepare_model, compile)", lambda: fit(True)))

    rows = []
    for label, make in variants:
        try:
            seconds = timed(make(), args.epochs, 1, device)
            rows.append({"variant": label, "images_per_s": images / seconds, "seconds": seconds})
        except Exception as err:  # noqa: BLE001  (a variant that fails, e.g. compile without a compiler, is reported)
            rows.append(
                {"variant": label, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
            )
        print(rows[-1], flush=True)

    ok = [r for r in rows if "images_per_s" in r]
    best_bare = max((r["images_per_s"] for r in ok if r["variant"].startswith("bare")), default=float("nan"))
    best_fit = max(
        (r["images_per_s"] for r in ok if r["variant"].startswith("train.fit")), default=float("nan")
    )
    print(f"\nResNet-18, {args.n} x 3x32x32 resident, batch {args.batch}, {args.epochs} timed epochs, {name}")
    print(f"{'variant':36s} {'images/s':>10s} {'x best bare':>12s}")
    for r in rows:
        if "images_per_s" in r:
            print(f"{r['variant']:36s} {r['images_per_s']:10.0f} {r['images_per_s'] / best_bare:12.2f}")
        else:
            print(f"{r['variant']:36s} {r['error']}")
    ratio = best_fit / best_bare
    print(
        f"train.fit / best bare: {ratio:.2f} (goal >= 0.90); train.fit: {best_fit / BASELINE:.2f} x 25.4k images/s "
        f"(goal >= {GOAL_FACTOR:.0f})"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {"device": name, "torch": torch.__version__, "rows": rows, "fit_over_bare": ratio}, indent=1
            )
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
