#!/usr/bin/env bash
# One GPU session for Chapter 7: execute the chapter top to bottom on the GPU (its stored outputs, the training run,
# the ladder), then time the real loop with CUDA graphs (bench_gpu.py --compile-mode reduce-overhead), within a
# deadline. For a GPU machine without Jupyter and without network, with the `.gpu-run` kit beside the checkout
# (../shared/gpu-notebook/README.md: the Jupyter wheels and the corpus). Everything goes to $OUT.
#
#   OUT=gpu-results DEADLINE_S=540 bash benchmarks/gpu_session.sh
#
# On a machine with Jupyter and the corpus already set up (the project's .venv), PYTHON=.venv/bin/python skips the
# wheels; without a GPU the notebook runs in smoke mode and bench_gpu.py is skipped, which checks the script itself.
set -u
OUT=${OUT:-gpu-results}
PYTHON=${PYTHON:-python3}
DEADLINE_S=${DEADLINE_S:-540}  # the whole session, in seconds: leave room for the device's own limit
start=$(date +%s)
left() { echo $((DEADLINE_S - ($(date +%s) - start))); }
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1

if [ -d .gpu-run/whl ] && ! "$PYTHON" -c "import nbclient, ipykernel" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-run/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONHASHSEED=0
[ -f .gpu-run/tinyshakespeare.txt ] && export LLAMA_NB_TINYSHAKESPEARE=$PWD/.gpu-run/tinyshakespeare.txt

date -u +"session start: %Y-%m-%d %H:%M UTC"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "nvidia-smi: no GPU"
"$PYTHON" -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda, '|',
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA GPU')"

# 1. The chapter, top to bottom. The executed notebook (or, on an error, the partial one) lands in $OUT.
t=$(left)
echo "== notebook (deadline in ${t} s)"
# benchmarks/run_notebook.py writes the notebook after every cell: a run cut short keeps the cells it finished
timeout $((t - 30)) "$PYTHON" benchmarks/run_notebook.py notebooks/07_gpu_training.ipynb --out "$OUT" \
  --timeout $((t - 40))
echo "notebook exit code $? after $(( $(date +%s) - start )) s"

# 2. CUDA graphs in the real loop, if time is left (the notebook's own throughput figures use the default mode).
t=$(left)
if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && [ "$t" -gt 120 ]; then
  echo "== bench_gpu.py --compile-mode reduce-overhead (deadline in ${t} s)"
  timeout $((t - 10)) "$PYTHON" benchmarks/bench_gpu.py --compile-mode reduce-overhead --max-steps 400 \
    --warmup-steps 100 --json | tee "$OUT/bench_reduce_overhead.txt"
else
  echo "== bench_gpu.py skipped: no CUDA GPU, or only ${t} s left"
fi
echo "session done in $(( $(date +%s) - start )) s"
