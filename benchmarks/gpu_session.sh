#!/usr/bin/env bash
# `make gpu-session`: what the next GPU lease should run, in one call of at most 8 minutes (its time-outs
# add up to 480 s), most needed first. Writes everything to ${OUT:-reports/gpu-latest}/ (at most 8 files:
# what a device call brings back; the .md tables are removed at the end, as session.log holds them).
#
#   1. train.fit against the best bare loop at batch 512 (train.fit now builds fused SGD on CUDA: does it
#      reach the bare fused loop's 54.1k images/s?), about 40 s;
#   2. the default suite on the whole machine (benchmarks/gpu_suite.py --lanes), most of the call: a GPU
#      lane (the eleven methods that pack: pack auto is 16 or 8 runs a pack on CUDA; 2 CPU cores for its
#      kernel and pack workers) and a cores lane (every method, device cpu, on the other 14 cores) side by
#      side, one method at a time each, from the two ends of one order (the fewest device operations per
#      second of the 2-core CPU run first on the GPU, the pinned methods and then the most on the cores;
#      benchmarks/op_count.py, docs/gpu.md), methods started within 230 s, both cut off at 290 s. Every method
#      that ran is timed against the committed CPU results (the quarter-time goal) and compared claim by
#      claim; then each method's faster place and the two-lane placement: each method in the lane that
#      makes the later lane end first, the suite's time under it against the 2-core CPU's, and which
#      methods to pin to the cores (packed data_diet is timed here against its CPU runtime;
#      benchmarks/packed_data_diet.py remains for a focused packed-vs-unpacked comparison);
#   3. a packed ELR and a packed downstream_scaling run killed in mid-fit and resumed on CUDA (CUDA
#      generator states, optimiser state on the device), against the device's own uninterrupted rerun
#      (benchmarks/gpu_resume.py, printed only), at most 25 s;
#   4. the full-profile rows not yet projected or fixed since they failed, each cut off after its own
#      time-out, rows written as they finish, at most 90 s.
# An offline machine first installs the wheels in .whl (see the README's "On a GPU").
set -u
out=${OUT:-reports/gpu-latest}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 REPLIKIT_PROGRESS=0 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/session.log"
timeout 60 "$py" benchmarks/gpu_throughput.py --batches 512 --epochs 2 --no-compile --budget 40 \
  --out "$out/gpu_throughput.json" 2>&1 | tee -a "$out/session.log"
# a lane cut off kills its kernels and workers; anything a time-out leaves behind is reaped
reap() { pkill -f ipykernel_launcher; pkill -f "multiprocessing.spawn"; sleep 1; }
timeout 300 "$py" benchmarks/gpu_suite.py --lanes --budget 230 --limit 290 --out "$out/lanes" 2>&1 \
  | tee -a "$out/session.log"
reap
timeout 25 "$py" benchmarks/gpu_resume.py --device cuda 2>&1 | tee -a "$out/session.log"
timeout 90 "$py" benchmarks/gpu_check.py --parts full \
  --methods uncertainty_weighting,gradnorm,grokking,downstream_scaling,model_soups,data_diet,ties_merging \
  --budget 55 --method-timeout 30 --timeouts gradnorm=50,data_diet=50,ties_merging=50 \
  --out "$out/gpu_check" 2>&1 | tee -a "$out/session.log"
# a device call brings back at most 8 files: the tables' .md copies are in session.log already
rm -f "$out"/*.md
ls -l "$out"
