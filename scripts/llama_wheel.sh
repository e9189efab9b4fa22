# Sourced by scripts/setup.sh and scripts/setup_coqui.sh (after scripts/uv.sh): both environments
# load the default text tokenizer (the packaged SmolLM2 GGUF's vocabulary) with llama.cpp.
# llama-cpp-python ships only as an sdist: build it once per machine into a wheelhouse, from the
# sdist whose hash locks/main.txt pins. GGML_NATIVE=OFF: the native build segfaults on this CPU
# family (AMX path) at the first decode. Sets LLAMA_VERSION and LLAMA_WHEELS (the folder to
# install it from: --no-index --find-links "$LLAMA_WHEELS").
WHEELS=${DUPLEX_WHEELS_DIR:-$HOME/.cache/duplex-factory/wheels}
LLAMA=$(grep -A1 '^llama-cpp-python==' locks/main.txt | tr -d '\\\n' | tr -s ' ')
LLAMA_VERSION=$(echo "$LLAMA" | sed -E 's/^llama-cpp-python==([^ ]+).*/\1/')
LLAMA_HASH=$(echo "$LLAMA" | sed -E 's/.*--hash=sha256:([0-9a-f]+).*/\1/')
LLAMA_WHEELS="$WHEELS/$LLAMA_HASH"
if ! ls "$LLAMA_WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  mkdir -p "$LLAMA_WHEELS"
  echo "llama-cpp-python==$LLAMA_VERSION --hash=sha256:$LLAMA_HASH" > "$LLAMA_WHEELS/req.txt"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "$UV_HOME/bin/python" -m pip wheel -q --disable-pip-version-check \
    --no-deps --no-binary llama-cpp-python --require-hashes -r "$LLAMA_WHEELS/req.txt" \
    -w "$LLAMA_WHEELS" 2>&1 | { grep -v "is ignored: it is neither" || true; }
fi
