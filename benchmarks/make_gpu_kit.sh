#!/usr/bin/env bash
# Make the kit a GPU session needs beside the checkout, in the git-ignored folder .gpu-run/ (one command, in the
# project's root, on a machine with network; run it again at will: what is already there is kept):
#
#   bash benchmarks/make_gpu_kit.sh
#
# - .gpu-run/whl/: the Jupyter execution stack as wheels for CPython 3.12 / x86-64 Linux (nbclient, ipykernel and
#   their dependencies, ../shared/gpu-notebook/wheels.txt), fetched by ../shared/gpu-notebook/fetch-wheels.sh;
#   benchmarks/gpu_session.sh installs them on the GPU machine, which has no Jupyter and no network.
# - .gpu-run/tinyshakespeare.txt: the corpus, from $LLAMA_NB_TINYSHAKESPEARE or ../shared/data/tinyshakespeare.txt,
#   its SHA-256 checked.
# - /.gpu-run/ listed once in .git/info/exclude, so that nothing in it is ever committed.
# Then carry the checkout with .gpu-run/ to the GPU machine and run, there, in the project's root:
#   OUT=$OUT DEADLINE_S=540 bash benchmarks/gpu_session.sh
set -euo pipefail
SHARED=${SHARED:-../shared}
KIT=.gpu-run
SHA256=86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed
corpus=${LLAMA_NB_TINYSHAKESPEARE:-$SHARED/data/tinyshakespeare.txt}

if [ ! -f benchmarks/make_gpu_kit.sh ] || [ ! -d llama_nb ]; then
  echo "make_gpu_kit.sh: run it in the project's root (where llama_nb/ and benchmarks/ are)" >&2
  exit 1
fi
wheels_txt=$SHARED/gpu-notebook/wheels.txt
fetch=$SHARED/gpu-notebook/fetch-wheels.sh
for f in "$wheels_txt" "$fetch"; do
  [ -f "$f" ] || { echo "make_gpu_kit.sh: $f not found (set SHARED to the folder that holds gpu-notebook/)" >&2; exit 1; }
done

# 1. Never committed: /.gpu-run/ in .git/info/exclude, once
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
if ! grep -qxF "/$KIT/" "$exclude" 2>/dev/null; then
  echo "/$KIT/" >> "$exclude"
  echo "added /$KIT/ to $exclude"
fi
mkdir -p "$KIT/whl"

# 2. The wheels: fetched unless every requirement of wheels.txt already has its wheel
missing=$(python3 - "$wheels_txt" "$KIT/whl" <<'EOF'
import re, sys
from pathlib import Path
have = set()
for wheel in Path(sys.argv[2]).glob("*.whl"):
    name, version = wheel.name.split("-")[:2]
    have.add((re.sub(r"[-_.]+", "_", name).lower(), version))
for line in Path(sys.argv[1]).read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
        name, version = line.split("==")
        if (re.sub(r"[-_.]+", "_", name).lower(), version) not in have:
            print(line)
EOF
)
if [ -n "$missing" ]; then
  echo "fetching the Jupyter wheels for CPython 3.12 ($(echo "$missing" | wc -l) missing)"
  bash "$fetch" "$KIT/whl"
else
  echo "wheels: all $(grep -cv '^#' "$wheels_txt" | tr -d ' ') requirements already in $KIT/whl"
fi

# 3. The corpus, checked
if [ -f "$KIT/tinyshakespeare.txt" ] && [ "$(sha256sum < "$KIT/tinyshakespeare.txt" | cut -d' ' -f1)" = "$SHA256" ]; then
  echo "corpus: $KIT/tinyshakespeare.txt already there, SHA-256 checked"
else
  [ -f "$corpus" ] || { echo "make_gpu_kit.sh: no corpus at $corpus (set LLAMA_NB_TINYSHAKESPEARE)" >&2; exit 1; }
  got=$(sha256sum < "$corpus" | cut -d' ' -f1)
  if [ "$got" != "$SHA256" ]; then
    echo "make_gpu_kit.sh: $corpus has SHA-256 $got, not TinyShakespeare's $SHA256" >&2
    exit 1
  fi
  cp "$corpus" "$KIT/.tinyshakespeare.txt.tmp"
  chmod 644 "$KIT/.tinyshakespeare.txt.tmp"
  mv "$KIT/.tinyshakespeare.txt.tmp" "$KIT/tinyshakespeare.txt"
  echo "corpus: copied $corpus to $KIT/tinyshakespeare.txt, SHA-256 checked"
fi

if ! git check-ignore -q "$KIT/whl/probe.whl"; then
  echo "make_gpu_kit.sh: $KIT is not git-ignored; check $exclude" >&2
  exit 1
fi
echo "kit ready: $KIT ($(du -sh "$KIT" | cut -f1), $(ls "$KIT"/whl/*.whl | wc -l) wheels, git-ignored). On the GPU" \
  "machine, in the project's root: OUT=\$OUT DEADLINE_S=540 bash benchmarks/gpu_session.sh"
