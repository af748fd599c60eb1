"""Packing seeds with ``torch.func``: can the default profile's many small runs share one GPU efficiently?

    timeout 150 python benchmarks/gpu_vmap.py --out reports/gpu_vmap.json   # on the GPU machine: < 1 minute
    python benchmarks/gpu_vmap.py --device cpu --quick                       # a tiny CPU run (tested)

S independent seeds of the suite's small 1-D CNN (``models.build("cnn1d", (40,), 10, width=32)``) on
MNIST-1D (``replikit.data.load("mnist1d")``: 8,000 train, 2,000 test; seeded random data of the same
shapes with a learnable linear labelling when the ``mnist1d`` package is missing), Adam at 1e-2, batch 256,
``--epochs`` epochs (default 8), fp32 (cuDNN may use TF32 for convolutions: torch's default). Seed s: its
own init (``torch.manual_seed(s)``) and its own batch order (a device-side ``torch.Generator`` seeded
10,000 + s, one ``randperm`` per epoch). Variants:

- ``sequential``: the seeds one after another, a plain loop (forward, cross-entropy, backward, Adam step);
- ``vmap``: the S models stacked (``torch.func.stack_module_state``), one ``functional_call`` vmapped over
  (parameters, x-batch, y-batch), one backward of the summed per-seed losses (the seeds are independent, so
  each gets exactly its own gradient) and one ``torch.optim.Adam`` over the stacked tensors (Adam is
  elementwise: S independent Adams); each step gathers an (S, B, 40) batch from the S permutations.

Each variant gets an untimed warm-up epoch first (sequential: one seed; vmap: a pack of the same S), and the
device is synchronised before every clock reading. The sequential seeds run once (the first max(S)) and
each pack size is compared with the sum of its seeds' times. Printed and written to ``--out`` (JSON):

- wall seconds per variant and pack size S, seconds per run, speed-up of vmap over sequential;
- final test accuracy and test loss per seed under both variants and their max |difference| (batched and
  single kernels sum in different orders, so they need not be equal: reported, not asserted);
- pack-size invariance: seeds 0..S/2-1 trained in a pack of S/2 against the same seeds inside the pack of
  S (bit-identical parameters, or the max |difference| of parameters and test accuracy).

A failing part is reported and the rest still runs; parts not started within ``--budget`` seconds are
skipped. The elapsed time is printed at the end.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the GPU machine may run this without installing replikit
os.environ.setdefault("REPLIKIT_PROGRESS", "0")

import torch  # noqa: E402  (after the sys.path insert above)
import torch.nn.functional as F  # noqa: E402
from torch.func import functional_call, stack_module_state, vmap  # noqa: E402

from replikit import models, train  # noqa: E402

LENGTH, CLASSES, WIDTH, LR = 40, 10, 32, 1e-2
BATCH_SEED = 10_000  # seed s draws its batch order from a generator seeded BATCH_SEED + s


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"


def load_data(device: torch.device, n_train: int, n_test: int) -> tuple[dict[str, torch.Tensor], str]:
    """MNIST-1D (its first ``n_train`` / ``n_test`` examples) or, without a working ``mnist1d``, random
    data of the same shapes labelled by a random linear map (learnable, so accuracies mean something)."""
    source = "random (mnist1d not installed)"
    if importlib.util.find_spec("mnist1d") is not None:
        try:
            from replikit import data

            t = data.load("mnist1d").tensors(device)
            x, y, xt, yt = t["x_train"], t["y_train"], t["x_test"], t["y_test"]
            return {
                "x": x[:n_train],
                "y": y[:n_train],
                "x_test": xt[:n_test],
                "y_test": yt[:n_test],
            }, "mnist1d"
        except Exception as err:  # noqa: BLE001  (random data will do for timing)
            source = f"random (mnist1d failed: {error_text(err)})"
    g = torch.Generator().manual_seed(0)
    x_all = torch.randn(n_train + n_test, LENGTH, generator=g)
    y_all = (x_all @ torch.randn(LENGTH, CLASSES, generator=g)).argmax(1)
    x_all, y_all = x_all.to(device), y_all.to(device)
    return {
        "x": x_all[:n_train],
        "y": y_all[:n_train],
        "x_test": x_all[n_train:],
        "y_test": y_all[n_train:],
    }, source


def fresh_model(seed: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build("cnn1d", (LENGTH,), CLASSES, width=WIDTH).to(device)


def batch_generators(seeds: list[int], device: torch.device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(BATCH_SEED + s) for s in seeds]


# ------------------------------------------------------------------ sequential: one seed at a time


def train_one(seed: int, d: dict, epochs: int, batch: int, device: torch.device) -> torch.nn.Module:
    """The plain loop: seed's init, seed's batch order, Adam."""
    model = fresh_model(seed, device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    [gen] = batch_generators([seed], device)
    n = len(d["y"])
    for _ in range(epochs):
        perm = torch.randperm(n, device=device, generator=gen)
        for b in range(n // batch):
            idx = perm[b * batch : (b + 1) * batch]
            loss = F.cross_entropy(model(d["x"][idx]), d["y"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model


@torch.no_grad()
def evaluate_one(model: torch.nn.Module, d: dict) -> tuple[float, float]:
    """(test accuracy, test loss)."""
    model.eval()
    logits = model(d["x_test"]).float()
    return (
        (logits.argmax(1) == d["y_test"]).float().mean().item(),
        F.cross_entropy(logits, d["y_test"]).item(),
    )


# ------------------------------------------------------------------ vmap: S seeds as one stacked model


class Pack:
    """S models stacked along a leading dimension, trained as one: vmapped forward, one backward, one Adam."""

    def __init__(self, seeds: list[int], device: torch.device):
        self.seeds = seeds
        stack = [fresh_model(s, device) for s in seeds]  # the same inits as the sequential runs
        self.params, self.buffers = stack_module_state(stack)  # leaves of shape (S, ...), requires_grad
        self.base = copy.deepcopy(stack[0]).to("meta")  # the architecture only, for functional_call
        self.opt = torch.optim.Adam(list(self.params.values()), lr=LR)
        self.gens = batch_generators(seeds, device)

    def logits(self, params, buffers, x):
        return functional_call(self.base, (params, buffers), (x,))

    def loss(self, params, buffers, x, y):
        return F.cross_entropy(self.logits(params, buffers, x), y)

    def train(self, d: dict, epochs: int, batch: int) -> None:
        n, device = len(d["y"]), d["y"].device
        per_seed_loss = vmap(self.loss)  # over (params, buffers, x-batch, y-batch), all on dim 0
        for _ in range(epochs):
            perms = torch.stack([torch.randperm(n, device=device, generator=g) for g in self.gens])
            for b in range(n // batch):
                idx = perms[:, b * batch : (b + 1) * batch]  # (S, B)
                losses = per_seed_loss(self.params, self.buffers, d["x"][idx], d["y"][idx])  # (S,)
                self.opt.zero_grad(set_to_none=True)
                losses.sum().backward()  # seeds independent: each parameter slice gets its own gradient
                self.opt.step()

    @torch.no_grad()
    def evaluate(self, d: dict) -> tuple[list[float], list[float]]:
        """Per seed: (test accuracies, test losses)."""
        logits = vmap(self.logits, in_dims=(0, 0, None))(self.params, self.buffers, d["x_test"]).float()
        acc = (logits.argmax(2) == d["y_test"]).float().mean(1)
        loss = torch.stack([F.cross_entropy(lg, d["y_test"]) for lg in logits])
        return acc.tolist(), loss.tolist()

    def params_of(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i].detach() for k, v in self.params.items()}


# ------------------------------------------------------------------ the benchmark


def timed(fn, device: torch.device) -> tuple[object, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def max_abs_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def pack_sizes(text: str) -> list[int]:
    sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"--packs {text!r}: positive integers, comma-separated")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument(
        "--quick", action="store_true", help="CPU test: S=2, 512 train / 256 test, batch 64, 1 epoch"
    )
    parser.add_argument("--packs", type=pack_sizes, default=None, help="pack sizes S (default 8,32)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 8)")
    parser.add_argument("--batch", type=int, default=None, help="examples per step (default 256)")
    parser.add_argument("--n-train", type=int, default=8_000, help="training examples (at most 8,000)")
    parser.add_argument("--n-test", type=int, default=2_000, help="test examples (at most 2,000)")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds; later parts are skipped")
    parser.add_argument("--out", default="", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.packs = args.packs or [2]
        args.epochs = args.epochs or 1
        args.batch = args.batch or 64
        args.n_train, args.n_test = min(args.n_train, 512), min(args.n_test, 256)
    packs, epochs, batch = args.packs or [8, 32], args.epochs or 8, args.batch or 256

    t_start = time.perf_counter()
    deadline = t_start + args.budget
    device = train.resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    print(
        f"device {name} | torch {torch.__version__} | CUDA {torch.version.cuda} | TF32 convs {tf32}",
        flush=True,
    )
    d, source = load_data(device, args.n_train, args.n_test)
    n_train = len(d["y"])
    if batch > n_train:
        parser.error(f"--batch {batch} is larger than the {n_train} training examples")
    print(
        f"data: {source}, {n_train} train / {len(d['y_test'])} test; cnn1d width {WIDTH}, Adam {LR}, "
        f"batch {batch}, {epochs} epochs, {n_train // batch} steps per epoch; packs {packs}",
        flush=True,
    )

    # sequential: one warm-up epoch, then seeds 0..max(S)-1 one after another, each timed
    seq: list[dict] = []  # per seed: seconds, test_acc, test_loss
    seq_error = None
    try:
        timed(lambda: train_one(0, d, 1, batch, device), device)  # warm-up
        for s in range(max(packs)):
            if time.perf_counter() > deadline:
                seq_error = f"skipped from seed {s} on: time budget spent"
                break
            model, seconds = timed(lambda s=s: train_one(s, d, epochs, batch, device), device)
            acc, loss = evaluate_one(model, d)
            seq.append({"seconds": seconds, "test_acc": acc, "test_loss": loss})
        print(f"sequential: {len(seq)} runs, {sum(r['seconds'] for r in seq):.2f} s", flush=True)
    except Exception as err:  # noqa: BLE001  (the vmap variant still runs)
        seq_error = error_text(err)
        print(f"sequential: {seq_error}", flush=True)

    rows: list[dict] = []
    comparisons: list[dict] = []
    invariance: list[dict] = []
    trained: dict[int, Pack] = {}  # vmap packs by size, for the invariance check

    def run_pack(size: int) -> tuple[Pack, float]:
        def build_and_train(n_epochs: int) -> Pack:  # timed with the inits, as each sequential run is
            pack = Pack(list(range(size)), device)
            pack.train(d, n_epochs, batch)
            return pack

        build_and_train(1)  # warm-up epoch at this pack size (kernel choice, allocator)
        return timed(lambda: build_and_train(epochs), device)

    for size in packs:
        if len(seq) >= size:
            wall = sum(r["seconds"] for r in seq[:size])
            rows.append(
                {"variant": "sequential", "S": size, "wall_s": wall, "s_per_run": wall / size, "speedup": 1.0}
            )
        else:
            rows.append({"variant": "sequential", "S": size, "error": seq_error or "not run"})
        if time.perf_counter() > deadline:
            rows.append({"variant": "vmap", "S": size, "error": "skipped: time budget spent"})
            continue
        try:
            pack, seconds = run_pack(size)
            trained[size] = pack
            row = {"variant": "vmap", "S": size, "wall_s": seconds, "s_per_run": seconds / size}
            row["speedup"] = rows[-1]["wall_s"] / seconds if "wall_s" in rows[-1] else float("nan")
            rows.append(row)
            acc, loss = pack.evaluate(d)
            comparison = {"S": size, "vmap_test_acc": acc, "vmap_test_loss": loss}
            if len(seq) >= size:
                comparison.update(
                    sequential_test_acc=[r["test_acc"] for r in seq[:size]],
                    sequential_test_loss=[r["test_loss"] for r in seq[:size]],
                )
                comparison["max_abs_diff_acc"] = max_abs_diff(acc, comparison["sequential_test_acc"])
                comparison["max_abs_diff_loss"] = max_abs_diff(loss, comparison["sequential_test_loss"])
            comparisons.append(comparison)
        except Exception as err:  # noqa: BLE001  (the other pack sizes still run)
            rows.append({"variant": "vmap", "S": size, "error": error_text(err)})
        print(rows[-1], flush=True)

    # pack-size invariance: seeds 0..S/2-1 in a pack of S/2 against the same seeds in the pack of S
    for size in packs:
        half = size // 2
        if size not in trained or half < 1:
            continue
        if time.perf_counter() > deadline and half not in trained:
            invariance.append({"S": size, "half": half, "error": "skipped: time budget spent"})
            continue
        try:
            if half not in trained:
                trained[half] = run_pack(half)[0]
            small, big = trained[half], trained[size]
            diffs = [
                (small.params_of(i)[k] - big.params_of(i)[k]).abs().max().item()
                for i in range(half)
                for k in small.params
            ]
            same = all(
                torch.equal(small.params_of(i)[k], big.params_of(i)[k])
                for i in range(half)
                for k in small.params
            )
            acc_small, _ = small.evaluate(d)
            acc_big, _ = big.evaluate(d)
            invariance.append(
                {
                    "S": size,
                    "half": half,
                    "bit_identical": same,
                    "max_abs_diff_params": max(diffs),
                    "max_abs_diff_acc": max_abs_diff(acc_small, acc_big[:half]),
                }
            )
        except Exception as err:  # noqa: BLE001
            invariance.append({"S": size, "half": half, "error": error_text(err)})

    elapsed = time.perf_counter() - t_start
    print(f"\ncnn1d (width {WIDTH}) on {source}, {epochs} epochs, batch {batch}, {name}")
    print(f"{'variant':12s} {'S':>4s} {'wall s':>9s} {'s per run':>10s} {'speed-up':>9s}")
    for r in rows:
        if "wall_s" in r:
            print(
                f"{r['variant']:12s} {r['S']:4d} {r['wall_s']:9.2f} {r['s_per_run']:10.3f} {r['speedup']:9.2f}"
            )
        else:
            print(f"{r['variant']:12s} {r['S']:4d} {r['error']}")
    for c in comparisons:
        print(f"S={c['S']}: vmap test accuracy per seed  {' '.join(f'{a:.4f}' for a in c['vmap_test_acc'])}")
        if "sequential_test_acc" in c:
            print(
                f"S={c['S']}: sequential                   "
                f"{' '.join(f'{a:.4f}' for a in c['sequential_test_acc'])}"
            )
            print(
                f"S={c['S']}: max |vmap - sequential|: test accuracy {c['max_abs_diff_acc']:.4g}, "
                f"test loss {c['max_abs_diff_loss']:.3g}"
            )
    for v in invariance:
        if "error" in v:
            print(f"pack {v['half']} vs pack {v['S']}: {v['error']}")
        else:
            print(
                f"pack {v['half']} vs pack {v['S']} (seeds 0-{v['half'] - 1}): bit-identical {v['bit_identical']}, "
                f"max |param diff| {v['max_abs_diff_params']:.3g}, max |test acc diff| {v['max_abs_diff_acc']:.4g}"
            )
    print(f"elapsed {elapsed:.1f} s", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "device": name,
                    "torch": torch.__version__,
                    "cuda": torch.version.cuda,
                    "tf32_convs": tf32,
                    "data": source,
                    "n_train": n_train,
                    "n_test": len(d["y_test"]),
                    "epochs": epochs,
                    "batch": batch,
                    "packs": packs,
                    "rows": rows,
                    "comparisons": comparisons,
                    "invariance": invariance,
                    "elapsed_s": elapsed,
                },
                indent=1,
            )
        )
    return 0 if any(r["variant"] == "vmap" and "wall_s" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
