# Sourced by the setup scripts of the heavy environments (vLLM, Coqui: several GB each).
# They live once per machine, outside any clone, so a fresh clone (CI) reuses them instead of
# rebuilding: .envs in the checkout is a link to $DUPLEX_ENVS_DIR.
DUPLEX_ENVS_DIR=${DUPLEX_ENVS_DIR:-$HOME/.cache/duplex-factory/envs}
if [ ! -e .envs ]; then
  mkdir -p "$DUPLEX_ENVS_DIR"
  ln -s "$DUPLEX_ENVS_DIR" .envs
fi
