#!/usr/bin/env bash
# The GPU checks and benchmarks, as run on the `device` GPU machine (H100/H200, CUDA 13, cuda-python, cupy, no
# pycuda, no internet). Wheels travel in .whl/ at the repository root (git-ignored: download them beforehand with
# `pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl ...`, and send the folder along):
# nvidia-nvimgcodec-cu13 + nvidia-nvjpeg (GPU JPEG decoding), pytest and its dependencies, pyyaml; optionally
# pycuda's sdist (built here, about 2 minutes, and left in $OUT for the next call) or an earlier call's pycuda
# wheel. Results and how they were read: benchmarks/README.md, "GPU results".
# Usage there:  bash benchmarks/gpu_machine.sh
#   writes to $OUT: pytest.log (GPU preprocessing + GPU decode tests), bench.log + gpu.json (benchmarks 7, 7b)
#   BENCH_ARGS=--jpeg: only benchmark 7b; SKIP_PYCUDA=1: do not build pycuda;
#   CPU_BENCHMARKS=1: also the CPU benchmarks on this machine's cores;
#   CORES="2 4 6": only benchmarks 10 (replay vs the user script) and 18 (ONNX Runtime options) and
#   `trt-perception demo` (3 runs), each under `taskset` on that many of this host's cores (Jetsons have 4-12,
#   the dev VM 2), into cores_<n>.log.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH CUDA_ROOT=/usr/local/cuda CUDA_HOME=/usr/local/cuda
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
if [ -n "${CORES:-}" ]; then
  lscpu | grep -E "Model name|^CPU\(s\)"
  python3 -c "import onnxruntime, cv2, numpy; print('onnxruntime', onnxruntime.__version__, 'cv2', cv2.__version__, 'numpy', numpy.__version__)"
  python3 -c "import motmetrics, lap, faster_coco_eval, matplotlib" 2>&1 | tail -1
  for n in $CORES; do
    cpus="0-$((n - 1))"
    echo "== $n cores (taskset -c $cpus)"
    (cd benchmarks && taskset -c "$cpus" timeout 200 python3 bench_replay.py
     taskset -c "$cpus" timeout 200 python3 bench_ort_options.py) > "$OUT/cores_$n.log" 2>&1
    grep -E "script|replay|\| (demo|SSD)" "$OUT/cores_$n.log" | cut -c1-200
    demo=$(mktemp -d)
    for run in 1 2 3; do
      start=$(date +%s.%N)
      (cd "$demo" && taskset -c "$cpus" python3 -m trt_perception.cli demo --force > demo.log 2>&1) || tail -3 "$demo/demo.log"
      echo "demo, $n cores: $(python3 -c "print(round($(date +%s.%N) - $start, 2))") s" | tee -a "$OUT/cores_$n.log"
    done
  done
  exit 0
fi
if [ "${SKIP_PYCUDA:-0}" != 1 ] && ls .whl/pycuda-*.tar.gz >/dev/null 2>&1 \
    && ! python3 -c "import pycuda.driver" 2>/dev/null; then
  start=$(date +%s)
  MAKEFLAGS=-j16 python3 -m pip wheel -q --no-index --no-deps --no-build-isolation -w "$OUT" \
    .whl/pycuda-*.tar.gz > "$OUT/pycuda-build.log" 2>&1 \
    && python3 -m pip install -q --no-index --no-deps --target /tmp/site "$OUT"/pycuda-*.whl \
    || echo "pycuda build failed (see pycuda-build.log); pycuda rows will be skipped"
  echo "pycuda build: $(( $(date +%s) - start )) s"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 - <<'EOF'
import importlib
for name in ("numpy", "cv2", "cuda.bindings", "pycuda", "cupy", "yaml", "pytest", "nvidia.nvimgcodec"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as exc:  # report what is missing and go on
        print(f"{name} missing ({exc})")
EOF
timeout 300 python3 -m pytest test/test_gpu_preprocess.py test/test_gpu_decode.py test/test_pipeline_gpu.py test/test_pipeline_gpu_decode.py -v -s -p no:cacheprovider -o addopts="" \
  2>&1 | tee "$OUT/pytest.log" | grep -E "FAIL|ERROR|SKIP|max \||decoded pixels|engine input|passed|failed|error" \
  | grep -v "PASSED" | tail -60
grep -c PASSED "$OUT/pytest.log" | sed 's/^/tests PASSED: /'
timeout 400 python3 benchmarks/bench_gpu.py ${BENCH_ARGS:-} --json "$OUT/gpu.json" 2>&1 | tee "$OUT/bench.log"
if [ "${CPU_BENCHMARKS:-0}" = 1 ]; then  # the CPU benchmarks on this machine's cores, for comparison
  timeout 300 python3 benchmarks/run.py --skip gpu --json "$OUT/cpu.json" > "$OUT/cpu.log" 2>&1
  grep -E "^## |PASS|MISS|Summary|CRASHED" "$OUT/cpu.log" | cut -c1-200 | tail -60
fi
