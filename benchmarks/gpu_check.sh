#!/usr/bin/env bash
# The GPU check: what a GPU user gets by default, in under 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --quick    # a short smoke run (CPU is fine)
#
# 1. tests/test_capture_correspondence.py with Keras's default compile settings
#    (TBBI_KERAS_DEFAULT_COMPILE=1: jit_compile="auto", so XLA is on where a GPU is;
#    sample ids instead of filename strings, which cannot pass through XLA);
# 2. benchmarks/overhead.py with few rounds (baseline, TensorBoard(update_freq="batch"),
#    the default, 16 and 64 images of every batch);
# then one summary: the device, the test counts and the overhead table.
#
# TensorFlow on x86_64 installs as tensorflow-cpu (setup.py): for TensorFlow to see the
# GPU, install the GPU build of the same version into the environment first
# (pip install "tensorflow[and-cuda]==$(python -c 'import tensorflow as t; print(t.__version__)')"),
# or run the check on JAX (KERAS_BACKEND=jax with jax[cuda]). The summary says which
# devices the backend saw, so a CPU-only run cannot pass for a GPU one.
# Environment: PY (default .venv/bin/python), OUT_DIR (default: a new temporary folder).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT_DIR=${OUT_DIR:-$(mktemp -d -t tbbi_gpu_check.XXXXXX)}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TBBI_KERAS_DEFAULT_COMPILE=1
export TF_CPP_MIN_LOG_LEVEL=2

if [[ "${1:-}" == "--quick" ]]; then
  TESTS=(-k "tf_data_logs_the_trained_batch or compiled_step_with_sample_ids")
  BENCH=(--quick --configs default,every_batch_16)
  TEST_LIMIT=240 BENCH_LIMIT=300
else
  TESTS=()
  BENCH=(--rounds 3 --epochs 3 --samples 2560)
  TEST_LIMIT=240 BENCH_LIMIT=200
fi
start=$(date +%s)

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    | sed 's/^/nvidia-smi: /' || true
  "$PY" - <<'EOF'
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
backend = keras.backend.backend()
if backend == "tensorflow":
    import tensorflow as tf
    devices = [d.name for d in tf.config.list_physical_devices()]
elif backend == "jax":
    import jax
    devices = [str(d) for d in jax.devices()]
else:
    import torch
    devices = ["cuda"] * torch.cuda.device_count() or ["cpu"]
gpu = any("GPU" in d.upper() or "CUDA" in d.upper() for d in devices)
print(f"backend: {backend} {keras.__version__}; devices: {devices}")
print("GPU: " + ("yes" if gpu else "NONE visible to the backend: these are CPU numbers"))
EOF
} | tee "$OUT_DIR/device.txt"

echo "== correspondence tests, Keras's default compile (limit ${TEST_LIMIT}s)"
timeout "$TEST_LIMIT" "$PY" -m pytest -q -p no:cacheprovider -p no:warnings \
  tests/test_capture_correspondence.py "${TESTS[@]}" 2>&1 | tee "$OUT_DIR/tests.txt" | tail -15
tests_rc=${PIPESTATUS[0]}

echo "== overhead benchmark (limit ${BENCH_LIMIT}s)"
timeout "$BENCH_LIMIT" "$PY" -m benchmarks.overhead "${BENCH[@]}" \
  --json "$OUT_DIR/overhead.json" >"$OUT_DIR/overhead.txt" 2>&1
bench_rc=$?
grep '^round' "$OUT_DIR/overhead.txt" || true

echo
echo "================ GPU check summary ================"
cat "$OUT_DIR/device.txt"
echo "tests: $(grep -E '[0-9]+ (passed|failed)' "$OUT_DIR/tests.txt" | tail -1) (exit $tests_rc)"
if [[ $bench_rc -eq 0 ]]; then
  sed -n '/^$/,$p' "$OUT_DIR/overhead.txt" | sed '1d'
else
  echo "overhead benchmark: exit $bench_rc (124: over its ${BENCH_LIMIT}s limit); see $OUT_DIR/overhead.txt"
  tail -5 "$OUT_DIR/overhead.txt"
fi
echo "took $(( $(date +%s) - start )) s; files in $OUT_DIR"
[[ $tests_rc -eq 0 && $bench_rc -eq 0 ]]
