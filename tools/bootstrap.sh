#!/usr/bin/env bash
# Build the project's environment in .venv at the repository root, idempotently.
#
#   bash tools/bootstrap.sh          # first run: ~5 min on 2 cores; later runs: seconds
#   FORCE=1 bash tools/bootstrap.sh  # redo every step
#
# Installs torch 2.14.1 / torchvision 0.29.1, the suite (editable, with all extras), detectron2 0.6
# (an official install is used untouched if present; otherwise the hash-pinned pb1-detectron2 sdist,
# placed on sys.path without building its C++ extension) and mmpose 1.3.2 on mmengine 0.10.7 /
# mmcv-lite 2.1.0 / mmdet 3.3.0. The facts behind each pin are in the comments below and transfer/compat.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
D2_SDIST_SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29
STAMP="$VENV/.bootstrap-stamp"
want_stamp="$(cat "$ROOT/tools/bootstrap.sh" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"

log() { printf '[bootstrap %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [[ -z "${FORCE:-}" && -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]] \
   && "$VENV/bin/python" -c "import torch, torchvision, detectron2, mmpose, pretrain" 2>/dev/null; then
  log "environment up to date ($VENV)"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
# pip.conf here lists find-links folders that may not exist; their warnings are noise.
pip_install() {
  "$PY" -m pip install --disable-pip-version-check --no-input -q "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

# setuptools<81: detectron2 0.6, mmengine and mmcv import pkg_resources, removed in setuptools 81.
log "torch 2.14.1 / torchvision 0.29.1"
pip_install "setuptools>=77,<81" wheel
pip_install torch==2.14.1 torchvision==0.29.1 "setuptools>=77,<81"

log "the suite and its declared dependencies (editable, all extras)"
pip_install -e "$ROOT[all,dev]" "setuptools>=77,<81"

# detectron2: keep an official build (it has detectron2._C) untouched; otherwise place the
# byte-identical pb1-detectron2 0.6 sdist on sys.path. Its only compiled part, detectron2._C,
# is not needed by Mask R-CNN R50-FPN/C4 (transfer/compat.py raises a clear error if an op is used).
if "$PY" -c "from detectron2 import _C" 2>/dev/null; then
  log "detectron2: official build found, used as installed"
elif "$PY" -c "import transfer.compat, detectron2.model_zoo" 2>/dev/null && [[ -f "$VENV/src/.detectron2-sha256" ]] \
     && [[ "$(cat "$VENV/src/.detectron2-sha256")" == "$D2_SDIST_SHA256" ]]; then
  log "detectron2: pb1-detectron2 0.6 already in place"
else
  log "detectron2: pb1-detectron2 0.6 sdist (hash-pinned), no C++ extension"
  tmp="$(mktemp -d)"
  printf 'pb1-detectron2==0.6 --hash=sha256:%s\n' "$D2_SDIST_SHA256" > "$tmp/req.txt"
  # --no-build-isolation: pip must not try to build the extension while preparing metadata.
  "$PY" -m pip download --disable-pip-version-check --no-input -q --no-deps --no-binary :all: \
      --no-build-isolation --require-hashes -r "$tmp/req.txt" -d "$tmp" \
    || "$PY" -m pip download --disable-pip-version-check --no-input -q --no-deps --no-binary :all: \
      --no-build-isolation -d "$tmp" pb1-detectron2==0.6
  sdist="$(ls "$tmp"/pb1*detectron2-0.6.tar.gz)"
  got="$(sha256sum "$sdist" | cut -d' ' -f1)"
  if [[ "$got" != "$D2_SDIST_SHA256" ]]; then
    echo "bootstrap: $sdist has sha256 $got, expected $D2_SDIST_SHA256; refusing to install it" >&2
    exit 1
  fi
  rm -rf "$VENV/src/pb1-detectron2-0.6" "$VENV/src/pb1_detectron2-0.6"
  mkdir -p "$VENV/src"
  tar -xzf "$sdist" -C "$VENV/src"
  d2dir="$(ls -d "$VENV"/src/pb1*detectron2-0.6)"
  site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$d2dir" > "$site/pb1_detectron2_src.pth"
  echo "$D2_SDIST_SHA256" > "$VENV/src/.detectron2-sha256"
  rm -rf "$tmp"
fi

# mmpose declares chumpy (unbuildable on 3.11, unused for 2D pose): --no-deps, its real deps come
# from the [pose] extra. The xtcocotools wheel is built against numpy 1: build it from the sdist.
if "$PY" -c "import mmpose, xtcocotools._mask" 2>/dev/null; then
  log "mmpose: already installed"
else
  log "mmpose 1.3.2 (--no-deps) and xtcocotools 1.14.3 from source"
  pip_install --no-deps mmpose==1.3.2
  pip_install --no-build-isolation --no-binary xtcocotools --no-deps xtcocotools==1.14.3
fi

log "checking imports"
"$PY" -c "import transfer.compat as c; c.apply(); import detectron2.modeling, mmpose.models; print('detectron2', __import__('detectron2').__version__, '| mmpose', __import__('mmpose').__version__, '| torch', __import__('torch').__version__)"
echo "$want_stamp" > "$STAMP"
log "done: activate with 'source .venv/bin/activate'"
