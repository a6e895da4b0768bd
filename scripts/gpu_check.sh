#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md in one pass, in priority order, each step under its own
# time limit and all of them within DEADLINE seconds (default 480):
#   1. versions and the device;
#   2. a tiny device_bench (does the code import and run with this machine's jax and flax?);
#   3. python -m llm_check.bench --preset $PRESET: SFT and GRPO steps (bf16, layer scan, attention
#      auto = dot_product on a GPU);
#   4. the gpu-marked tests (cuDNN attention against einsum; float32 on the GPU against the CPU);
#   5. the SFT step alone: layer scan off (compile time and speed), einsum attention, cuDNN
#      attention (speed only: its gradients were wrong on an H200, docs/benchmarks.md), the LM
#      head on an answer window of $WINDOW positions (default 8; the pipeline's SFT step), the step
#      without donation (--no-donate, as the pipeline runs it: its peak memory against step 3's),
#      and a larger batch (MFU).
# Usage: scripts/gpu_check.sh OUTDIR. Run from the repository root, with jax[cuda] installed.
# Optional, for a machine without a package index: if the installed flax or optax fails step 2 and
# the user has put wheels in .whl/, they are installed to a temporary folder that goes before
# site-packages, and step 2 runs again. PRESET=tiny and BIG="--batch 8 --seq 64" make a CPU dry run.
set -u
out=${1:?usage: scripts/gpu_check.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
preset=${PRESET:-qwen3-0.6b}
big=${BIG:---batch 16 --seq 1024}
window=${WINDOW:-8}
deadline=${DEADLINE:-480}
err="$out/stderr.log"

step() {  # step NAME LIMIT_S OUTFILE CMD...: run CMD under min(LIMIT_S, time left), stdout to OUTFILE
  local name=$1 limit=$2 file=$3
  shift 3
  local left=$((deadline - SECONDS - 5))
  if ((left < 20)); then echo "== $name: skipped, ${left}s left"; return 1; fi
  ((limit > left)) && limit=$left
  echo "== $name (limit ${limit}s)" | tee -a "$err"
  local t0=$SECONDS rc
  timeout "$limit" "$@" >"$file" 2>>"$err"
  rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  return $rc
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  "$py" -c "import sys, jax, jaxlib, flax, optax; print(sys.version.split()[0], 'jax', jax.__version__,
'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print(jax.devices())"
} >"$out/versions.txt" 2>&1
cat "$out/versions.txt"

probe=(-c "from llm_check import bench; r = bench.device_bench('tiny', repeats=1, batch=2, seq=16,
prompts=2, group=2, prompt_len=4, new_tokens=3); print(r['device'], r['attention'],
r.get('attention_fallback'), 'sft', r['sft']['step_s'], 'grpo', r['grpo']['step_s'])")
if ! step probe 150 "$out/probe.txt" "$py" "${probe[@]}"; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PWD:/tmp/site"  # the wheels from .whl/ before site-packages
    "$py" -c "import flax, optax; print('from .whl/: flax', flax.__version__, 'optax', optax.__version__)"
    step probe-whl 150 "$out/probe.txt" "$py" "${probe[@]}" || { tail -n 40 "$err"; exit 1; }
  else
    tail -n 40 "$err"; exit 1
  fi
fi
cat "$out/probe.txt"

bench=("$py" -m llm_check.bench --preset "$preset" --json)
step bench 240 "$out/bench.json" "${bench[@]}"
step gpu-tests 150 "$out/gpu_tests.txt" "$py" -m pytest -n 0 -q -s -rxX -m gpu tests/test_llm_gpu.py
tail -n 40 "$out/gpu_tests.txt"
# shellcheck disable=SC2086  # $big is a list of flags
step sft-variants 200 "$out/sft_variants.txt" bash -c "
  for v in '--scan-layers off' '--attention einsum' '--attention cudnn' '--window $window' \
           '--no-donate' '$big'; do
    echo \"## \$v\"; $py -m llm_check.bench --preset $preset --sft-only \$v || echo \"## failed: \$v\"
  done"
cat "$out/sft_variants.txt"

"$py" - "$out/bench.json" <<'EOF'
import json, sys
from llm_check.bench import print_device_bench
try:
    print_device_bench(json.load(open(sys.argv[1])))
except Exception as e:  # noqa: BLE001  (the step failed or timed out: say so, the log has why)
    print(f"no bench figures: {type(e).__name__}: {e}")
EOF
echo "== done after $SECONDS s"
