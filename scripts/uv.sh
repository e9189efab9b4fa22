# Sourced by the set-up and lock scripts: a pinned uv, installed once per machine in its own
# small venv (uv resolves and installs ~10x faster than pip, and reads no pip configuration, so
# what it installs is exactly what the locks say). Sets UV and UV_VERSION.
UV_VERSION=0.13.9
UV_HOME=${DUPLEX_UV_HOME:-$HOME/.cache/duplex-factory/uv-$UV_VERSION}
UV="$UV_HOME/bin/uv"
if [ ! -x "$UV" ]; then
  _py=${PYTHON:-python3.11}
  command -v "$_py" >/dev/null || _py=python3
  "$_py" -m venv "$UV_HOME"
  "$UV_HOME/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
fi
