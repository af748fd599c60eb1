#!/usr/bin/env bash
# `make gpu-session`: what the next GPU lease should run, in one call of at most 8 minutes (its time-outs
# add up to 480 s), most needed first. Writes everything to ${OUT:-reports/gpu-latest}/ (at most 8 files:
# what a device call brings back; the .md tables are removed at the end, as session.log holds them).
#
#   1. train.fit against the best bare loop at batch 512 (train.fit now builds fused SGD on CUDA: does it
#      reach the bare fused loop's 54.1k images/s?), about 40 s;
#   2. the default suite on the GPU (packed by default: pack auto is 16 or 8 runs a pack on CUDA for the
#      eleven methods that pack) against the committed CPU results (the quarter-time goal; verdicts
#      compared claim by claim), as many methods as start within 190 s: the suite's total is the open
#      question, so it gets most of the call (packed data_diet is timed here against its CPU runtime;
#      benchmarks/packed_data_diet.py remains for a focused packed-vs-unpacked comparison);
#   3. a packed ELR and a packed downstream_scaling run killed in mid-fit and resumed on CUDA (CUDA
#      generator states, optimiser state on the device), against the device's own uninterrupted rerun
#      (benchmarks/gpu_resume.py, printed only), at most 25 s;
#   4. the default suite on the machine's CPU cores (one run per core), the methods most likely to beat
#      their GPU time there first: those issuing the most device operations per second of their 2-core
#      CPU run (benchmarks/op_count.py, README), as many as start within 60 s. With step 2 this says,
#      method by method, where a GPU machine should run the default profile (grokking and
#      critical_periods already stay on the cores), at most 85 s; then (no time) each method in its
#      faster place and the suite's total under that placement (gpu_suite.py --placement);
#   5. the full-profile rows not yet projected or fixed since they failed, each cut off after its own
#      time-out, rows written as they finish, at most 60 s.
# An offline machine first installs the wheels in .whl (see the README's "On a GPU").
set -u
out=${OUT:-reports/gpu-latest}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 REPLIKIT_PROGRESS=0 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/session.log"
timeout 60 "$py" benchmarks/gpu_throughput.py --batches 512 --epochs 2 --no-compile --budget 40 \
  --out "$out/gpu_throughput.json" 2>&1 | tee -a "$out/session.log"
# a suite cut off by its time-out leaves its kernel and the kernel's worker processes behind
reap() { pkill -f ipykernel_launcher; pkill -f "multiprocessing.spawn"; sleep 1; }
timeout 250 "$py" benchmarks/gpu_suite.py --budget 190 --out "$out/gpu_suite" 2>&1 | tee -a "$out/session.log"
reap
timeout 25 "$py" benchmarks/gpu_resume.py --device cuda 2>&1 | tee -a "$out/session.log"
timeout 85 "$py" benchmarks/gpu_suite.py --device cpu --budget 60 --out "$out/cpu_suite" \
  --methods gradnorm,task_arithmetic,rotnet,downstream_scaling,model_soups,uncertainty_weighting,dann,ties_merging,sla,elr,data_diet \
  2>&1 | tee -a "$out/session.log"
reap
# runs nothing: each method in its faster place (steps 2 and 4), the suite's total under that placement
"$py" benchmarks/gpu_suite.py --placement "$out/gpu_suite.json" "$out/cpu_suite.json" 2>&1 | tee -a "$out/session.log"
timeout 60 "$py" benchmarks/gpu_check.py --parts full \
  --methods uncertainty_weighting,gradnorm,grokking,downstream_scaling,model_soups,data_diet,ties_merging \
  --budget 25 --method-timeout 30 --timeouts gradnorm=50,data_diet=50,ties_merging=50 \
  --out "$out/gpu_check" 2>&1 | tee -a "$out/session.log"
# a device call brings back at most 8 files: the tables' .md copies are in session.log already
rm -f "$out"/*.md
ls -l "$out"
