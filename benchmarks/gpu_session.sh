#!/usr/bin/env bash
# One GPU session for Chapter 7, within a deadline, everything to $OUT. Run it in the project's root:
#
#   OUT=gpu-results DEADLINE_S=540 bash benchmarks/gpu_session.sh
#
# 1. Preflight: prints the GPU, torch and CUDA versions and loads the corpus. No CUDA device: it stops here with
#    exit code 2, unless ALLOW_CPU=1 (a CPU dry run: everything in smoke mode, no figure worth quoting).
# 2. Jupyter: where $PYTHON lacks nbclient/ipykernel, installs the kit's wheels (.gpu-run/whl, made by
#    `bash benchmarks/make_gpu_kit.sh`) into a temporary folder. If that fails, the notebook is skipped, not the rest.
# 3. The chapter, top to bottom (benchmarks/run_notebook.py writes it to $OUT after every cell), with
#    LLAMA_NB_RESULTS_DIR=$OUT (ch7_run.json, ch7_ladder.json) and LLAMA_NB_DEADLINE (Unix time) leaving BENCH_S
#    seconds for step 4.
# 4. bench_gpu.py --compile-mode reduce-overhead, with its batch sweep, until the deadline: $OUT/bench_gpu.json.
# 5. A summary line per figure from those JSON files ("missing" for what did not come back), and a check that $OUT
#    holds at most 8 files, none deeper than two folders or of 16 MiB or more (benchmarks/gpu_summary.py).
# $OUT gets session.log (all of the above), the executed notebook and the three JSON files. Exit code 0 when every
# step worked, 2 without CUDA (and without ALLOW_CPU=1), 1 otherwise. It never touches notebooks/: copy the notebook
# over the chapter with benchmarks/accept_gpu_notebook.py, which checks that it is a complete full GPU run.
#
# Settings (environment): OUT (gpu-results), DEADLINE_S (540: the whole session, in seconds), PYTHON (python3; on a
# development machine .venv/bin/python needs no wheels), ALLOW_CPU (0), BENCH_S (150; 45 with ALLOW_CPU=1 on a CPU),
# KIT (.gpu-run), NOTEBOOK (notebooks/07_gpu_training.ipynb).
set -u
OUT=${OUT:-gpu-results}
PYTHON=${PYTHON:-python3}
DEADLINE_S=${DEADLINE_S:-540}
ALLOW_CPU=${ALLOW_CPU:-0}
BENCH_S=${BENCH_S:-}  # kept for bench_gpu.py: 150 s on a GPU (compilation, 300 steps, sweep rows), 45 s smoke
KIT=${KIT:-.gpu-run}
NOTEBOOK=${NOTEBOOK:-notebooks/07_gpu_training.ipynb}
start=$(date +%s)
end=$((start + DEADLINE_S))
left() { echo $((end - $(date +%s))); }
elapsed() { echo $(($(date +%s) - start)); }

if [ ! -f benchmarks/gpu_session.sh ] || [ ! -d llama_nb ]; then
  echo "gpu_session.sh: run it in the project's root (where llama_nb/ and benchmarks/ are)" >&2
  exit 1
fi
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
for f in session.log ch7_run.json ch7_ladder.json bench_gpu.json "$(basename "$NOTEBOOK")"; do
  rm -f "$OUT/$f"  # from an earlier session: nothing below may be mistaken for this one's
done

session() {
  local failed=() smoke=0 jupyter=1 site="" status t nb_deadline
  trap '[ -z "$site" ] || rm -rf "$site"' EXIT  # the Jupyter wheels installed for this session
  date -u +"session start: %Y-%m-%d %H:%M:%S UTC, deadline in ${DEADLINE_S} s, results in $OUT"
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONHASHSEED=0
  if [ -z "${LLAMA_NB_TINYSHAKESPEARE:-}" ] && [ -f "$KIT/tinyshakespeare.txt" ]; then
    export LLAMA_NB_TINYSHAKESPEARE=$PWD/$KIT/tinyshakespeare.txt
  fi

  # 1. Preflight
  echo "== preflight"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: not found or no GPU"
  "$PYTHON" - <<'EOF'
import sys
try:
    import torch
except Exception as e:
    print(f"preflight: torch does not import: {type(e).__name__}: {e}")
    sys.exit(5)
cuda = torch.cuda.is_available()
gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda else "no CUDA device"
print(f"preflight: python {sys.version.split()[0]} | torch {torch.__version__} | CUDA {torch.version.cuda} | {gpus}")
try:
    from llama_nb.data import load_tinyshakespeare, tinyshakespeare_path
    text = load_tinyshakespeare()
except Exception as e:
    print(f"preflight: the corpus does not load: {type(e).__name__}: {e}")
    sys.exit(4)
print(f"preflight: corpus {len(text):,} characters from {tinyshakespeare_path()}")
sys.exit(0 if cuda else 3)
EOF
  status=$?
  if [ "$status" = 3 ] && [ "$ALLOW_CPU" = 1 ]; then
    smoke=1
    export LLAMA_NB_SMOKE=1
    echo "preflight: no CUDA device, and ALLOW_CPU=1: a CPU DRY RUN, everything in smoke mode (no figure to quote)"
  elif [ "$status" = 3 ]; then
    echo "preflight: STOP: no CUDA device here (torch.cuda.is_available() is False), so this would not be a GPU run."
    echo "  On the GPU machine: check nvidia-smi and that this torch is a CUDA build. For a CPU dry run of this script"
    echo "  (smoke mode, nothing worth quoting), run it again with ALLOW_CPU=1."
    return 2
  elif [ "$status" != 0 ]; then
    echo "preflight: STOP (exit code $status): see above; nothing was run"
    return 1
  fi

  # 2. Jupyter, from the kit's wheels where $PYTHON has none
  if ! "$PYTHON" -c "import nbclient, ipykernel" 2>/dev/null; then
    if compgen -G "$KIT/whl/*.whl" >/dev/null; then
      site=$(mktemp -d "${TMPDIR:-/tmp}/gpu-session-site.XXXXXX")
      echo "== installing the kit's $(ls "$KIT"/whl/*.whl | wc -l) Jupyter wheels into $site"
      if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$KIT"/whl/*.whl; then
        echo "pip install failed; unpacking the wheels instead (what --no-deps --target does)"
        "$PYTHON" -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" \
          "$site" "$KIT"/whl/*.whl
      fi
      if PYTHONPATH=$site:$PYTHONPATH "$PYTHON" -c "import nbclient, nbformat, ipykernel" 2>&1; then
        export PYTHONPATH=$site:$PYTHONPATH
      else
        jupyter=0
        echo "the kit's wheels did not install: THE NOTEBOOK IS SKIPPED (bench_gpu.py still runs)"
      fi
    else
      jupyter=0
      echo "no Jupyter (nbclient, ipykernel) for $PYTHON and no wheels in $KIT/whl (bash benchmarks/make_gpu_kit.sh" \
        "makes them): THE NOTEBOOK IS SKIPPED (bench_gpu.py still runs)"
    fi
  fi

  # 3. The chapter
  t=$(left)
  if [ "$jupyter" = 1 ] && [ "$t" -lt 60 ]; then
    jupyter=0
    echo "== notebook skipped: only $t s left"
  fi
  if [ "$jupyter" = 1 ]; then
    [ -n "$BENCH_S" ] || { [ "$smoke" = 1 ] && BENCH_S=45 || BENCH_S=150; }
    # the notebook sizes its ladder to its deadline; bench_gpu.py gets BENCH_S, or a third when time is short
    if [ $((t - BENCH_S)) -ge 120 ]; then nb_deadline=$((end - BENCH_S)); else nb_deadline=$((end - t / 3)); fi
    echo "== notebook $NOTEBOOK: $((nb_deadline - $(date +%s))) s until its deadline (LLAMA_NB_DEADLINE=$nb_deadline)," \
      "then $((end - nb_deadline)) s for bench_gpu.py"
    # run_notebook.py keeps to the deadline itself (a cell gets at most the time left) and writes the notebook after
    # every cell; `timeout` is the backstop, with time for it to shut its kernel down
    LLAMA_NB_RESULTS_DIR=$OUT LLAMA_NB_DEADLINE=$nb_deadline \
      timeout -k 10 $((nb_deadline - $(date +%s) + 15)) "$PYTHON" benchmarks/run_notebook.py "$NOTEBOOK" \
      --out "$OUT" --timeout $((nb_deadline - $(date +%s))) --deadline "$nb_deadline"
    status=$?
    echo "notebook exit code $status after $(elapsed) s"
    [ "$status" = 0 ] || failed+=("notebook (exit code $status)")
  else
    failed+=("notebook (skipped)")
  fi

  # 4. The loop with CUDA graphs, and the batch sweep
  t=$(left)
  if [ "$t" -ge 45 ]; then
    local bench=(--compile-mode reduce-overhead --max-steps 300 --warmup-steps 100)
    [ "$smoke" = 1 ] && bench=(--smoke --compile-mode reduce-overhead)
    echo "== bench_gpu.py ${bench[*]} (deadline in $t s)"
    timeout -k 5 $((t - 5)) "$PYTHON" benchmarks/bench_gpu.py "${bench[@]}" --deadline $((end - 10)) \
      --json "$OUT/bench_gpu.json"
    status=$?
    echo "bench_gpu.py exit code $status after $(elapsed) s"
    [ "$status" = 0 ] || failed+=("bench_gpu.py (exit code $status)")
  else
    echo "== bench_gpu.py skipped: only $t s left"
    failed+=("bench_gpu.py (skipped: no time left)")
  fi

  # 5. What came back
  "$PYTHON" benchmarks/gpu_summary.py "$OUT" || failed+=("the limits on \$OUT")
  [ "$smoke" = 1 ] && echo "(a CPU dry run: smoke mode, no figure above is a GPU result)"
  if [ ${#failed[@]} = 0 ]; then
    echo "session done in $(elapsed) s: everything ran"
    return 0
  fi
  echo "session done in $(elapsed) s: FAILED: $(IFS=';'; echo "${failed[*]}" | sed 's/;/; /g')"
  return 1
}

session 2>&1 | tee -a "$OUT/session.log"
exit "${PIPESTATUS[0]}"
