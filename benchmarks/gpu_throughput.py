"""``train.fit`` against the best bare PyTorch loop: ResNet-18 on CIFAR-10 shapes, images per second.

    python benchmarks/gpu_throughput.py                       # on the GPU machine (a few minutes)
    timeout 200 python benchmarks/gpu_throughput.py --batches 256,512,1024 --epochs 2 --no-compile \
        --budget 150 --out reports/gpu_throughput.json        # bounded: 1-2 minutes on an H200
    python benchmarks/gpu_throughput.py --device cpu --quick  # a tiny CPU run (tested)

50,000 random 3x32x32 images resident on the device, SGD (momentum 0.9), bf16 autocast on CUDA, the
suite's ResNet-18 (``models.build("resnet18")``), at every batch size of ``--batches`` (default 512).
Bare loops: plain (NCHW), channels_last, channels_last with ``torch.optim.SGD(fused=True)`` (an error
row where this torch has no fused SGD for the device), and channels_last + ``torch.compile``; then
``train.fit`` with ``train.prepare_model`` (channels_last on CUDA), without and with compile. Each
variant gets a fresh model (same init; compile caches reset, so every batch size compiles for its own
shape), one untimed warm-up epoch (compilation, cuDNN autotuning), then ``--epochs`` timed epochs.
Variants not started within ``--budget`` seconds are reported as skipped; a failing variant is reported
and the others still run. Goal (issue 9, on an H200), per batch size: ``train.fit`` >= 0.9 x the best
bare loop at that batch size and >= 2 x 25.4k images/s.
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


def sgd(model: torch.nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    extra = {"fused": True} if fused else {}  # fused=None (the default): torch picks foreach on CUDA
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, **extra)


def bare_epochs(
    model, opt, x, y, batch: int, epochs: int, device: torch.device, gen: torch.Generator
) -> None:
    """The minimum any training needs: device permutation, slice, forward, backward, step."""
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


def batch_sizes(text: str) -> list[int]:
    """``"256,512"`` -> ``[256, 512]``."""
    sizes = [int(b) for b in text.split(",") if b.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--batches {text!r}: positive integers, comma-separated")
    return sizes


def summary(rows: list[dict], batches: list[int]) -> list[dict]:
    """Per batch size: the best bare loop, the best ``train.fit``, their ratio and fit against 25.4k/s."""
    out = []
    for batch in batches:
        ok = [r for r in rows if r["batch"] == batch and "images_per_s" in r]
        bare = max((r["images_per_s"] for r in ok if r["variant"].startswith("bare")), default=float("nan"))
        fit = max(
            (r["images_per_s"] for r in ok if r["variant"].startswith("train.fit")), default=float("nan")
        )
        out.append(
            {
                "batch": batch,
                "best_bare": bare,
                "best_fit": fit,
                "fit_over_bare": fit / bare,
                "fit_over_baseline": fit / BASELINE,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--quick", action="store_true", help="16 images, batch 8 (unless --batches), no compile (CPU tests)"
    )
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument(
        "--batches", type=batch_sizes, default=None, help="batch sizes, comma-separated (default 512)"
    )
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per variant")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument(
        "--budget", type=float, default=300.0, help="seconds; variants not started by then are skipped"
    )
    parser.add_argument("--out", default="", help="also write the table as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.epochs, args.no_compile = 16, 1, True
    args.batches = args.batches or ([8] if args.quick else [512])
    if max(args.batches) > args.n:
        parser.error(f"--batches {args.batches}: every batch size must be at most --n {args.n}")

    t_start = time.perf_counter()
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

    def bare(batch: int, channels_last: bool, compile: bool, fused: bool = False):
        if compile:
            torch.compiler.reset()  # no graph from another batch size or variant (nor dynamic shapes)
        model = fresh_model(device, channels_last)
        opt = sgd(model, fused=fused)
        if compile:
            model.compile()
        x = x_last if channels_last else x_plain
        gen = torch.Generator(device=device).manual_seed(1)
        return lambda e: bare_epochs(model, opt, x, y, batch, e, device, gen)

    def fit(batch: int, compile: bool):
        if compile:
            torch.compiler.reset()
        model = train.prepare_model(fresh_model(device, False), device, compile=compile)

        def step(idx, p):
            return F.cross_entropy(model(x_fit[idx]), y[idx])

        # the optimiser as a method gets it: built by train.fit (fused on CUDA), SGD as in ``sgd`` above
        return lambda e: train.fit(
            step,
            model.parameters(),
            args.n,
            epochs=e,
            batch_size=batch,
            seed=1,
            device=device,
            models=[model],
            optimizer="sgd",
            lr=0.05,
            momentum=0.9,
            weight_decay=5e-4,
        )

    variants = [
        ("bare, plain", lambda b: bare(b, False, False)),
        ("bare, channels_last", lambda b: bare(b, True, False)),
        ("bare, channels_last, fused SGD", lambda b: bare(b, True, False, fused=True)),
    ]
    if not args.no_compile:
        variants.append(("bare, channels_last + compile", lambda b: bare(b, True, True)))
    variants.append(("train.fit (prepare_model)", lambda b: fit(b, False)))
    if not args.no_compile:
        variants.append(("train.fit (prepare_model, compile)", lambda b: fit(b, True)))

    rows = []
    for batch in args.batches:
        images = args.epochs * (args.n // batch) * batch
        for label, make in variants:
            row = {"variant": label, "batch": batch}
            if time.perf_counter() - t_start > args.budget:
                rows.append(dict(row, error="skipped: time budget spent"))
                print(rows[-1], flush=True)
                continue
            try:
                seconds = timed(make(batch), args.epochs, 1, device)
                row.update(images_per_s=images / seconds, seconds=seconds)
            except Exception as err:  # noqa: BLE001  (a variant that fails, e.g. compile without a compiler, is reported)
                row["error"] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
            rows.append(row)
            print(rows[-1], flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    per_batch = summary(rows, args.batches)
    best_bare = {s["batch"]: s["best_bare"] for s in per_batch}
    print(
        f"\nResNet-18, {args.n} x 3x32x32 resident, {args.epochs} timed epochs, {name} "
        f"({time.perf_counter() - t_start:.0f} s in all)"
    )
    print(f"{'variant':36s} {'batch':>6s} {'images/s':>10s} {'x best bare':>12s}")
    for r in rows:
        if "images_per_s" in r:
            print(
                f"{r['variant']:36s} {r['batch']:6d} {r['images_per_s']:10.0f} "
                f"{r['images_per_s'] / best_bare[r['batch']]:12.2f}"
            )
        else:
            print(f"{r['variant']:36s} {r['batch']:6d} {r['error']}")
    for s in per_batch:
        print(
            f"batch {s['batch']}: train.fit / best bare: {s['fit_over_bare']:.2f} (goal >= 0.90); "
            f"train.fit: {s['fit_over_baseline']:.2f} x 25.4k images/s (goal >= {GOAL_FACTOR:.0f})"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {"device": name, "torch": torch.__version__, "rows": rows, "summary": per_batch}, indent=1
            )
        )
    return 0 if any("images_per_s" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
