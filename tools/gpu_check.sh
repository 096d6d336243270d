#!/usr/bin/env bash
# The GPU check (tools/gpu_check.py): every CUDA path of the suite in one command and one table.
#
#   bash tools/gpu_check.sh --fetch-wheels     # once, where a package index answers: the engines'
#                                              # wheels and sources into .whl/ (about 9 MB)
#   bash tools/gpu_check.sh --out DIR          # with CUDA: the rows, DIR/gpu_check.{txt,json}
#   bash tools/gpu_check.sh                    # without CUDA: the plan and its minutes, exit 0
#   bash tools/gpu_check.sh --device cpu --tiny --out DIR   # every row on the CPU, tiny sizes
#
# Python: the project's .venv when it has torch (tools/bootstrap.sh). Otherwise (a GPU image with
# torch and no package index) it builds .venv here on the machine's own python3 and torch from the
# carried .whl/: the wheels, the pb1-detectron2 0.6 sdist (placed on sys.path, as the bootstrap
# does) and xtcocotools built from its sdist against the machine's numpy. Any other flag goes to
# tools/gpu_check.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="$ROOT/.whl"
VENV="$ROOT/.venv"
export GPU_CHECK_STARTED="${GPU_CHECK_STARTED:-$(date +%s)}"  # the check's budget counts from here
D2_SDIST_SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29

log() { printf '[gpu_check %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The engines' stack at the versions tools/bootstrap.sh and setup.py pin, for the GPU image's
# Python (3.12, x86-64), without their dependencies (the image has torch, numpy, scipy, OpenCV).
BINARY=(pycocotools==2.0.11 omegaconf==2.3.1 hydra-core==1.3.8 yacs==0.1.8 termcolor==3.3.0
        mmengine==0.10.7 mmcv-lite==2.1.0 mmdet==3.3.0 mmpose==1.3.2 json-tricks==3.17.3
        munkres==3.0.0 addict==2.4.0 yapf==0.43.0 shapely==2.2.0 terminaltables==3.1.10
        platformdirs==4.14.9)
PURE_SDISTS=(fvcore==0.1.5.post20221221 iopath==0.1.10 antlr4-python3-runtime==4.9.3)
fetch_wheels() {
  local py="${PYTHON:-python3}" pip
  [[ -x "$VENV/bin/python" ]] && py="$VENV/bin/python"
  pip=("$py" -m pip --disable-pip-version-check --no-input -q)
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  "${pip[@]}" download --no-deps --only-binary=:all: --python-version "${GPU_PYTHON:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$WHEELS" "${BINARY[@]}"
  "${pip[@]}" wheel --no-deps --no-build-isolation -w "$WHEELS" "${PURE_SDISTS[@]}"
  "${pip[@]}" download --no-deps --no-binary :all: --no-build-isolation -d "$WHEELS" \
    pb1-detectron2==0.6 xtcocotools==1.14.3
  local got
  got="$(sha256sum "$WHEELS"/pb1*detectron2-0.6.tar.gz | cut -d' ' -f1)"
  [[ "$got" == "$D2_SDIST_SHA256" ]] \
    || { echo "gpu_check.sh: pb1-detectron2 sdist has sha256 $got, expected $D2_SDIST_SHA256" >&2
         exit 1; }
  log "$(ls "$WHEELS" | wc -l) files, $(du -sh "$WHEELS" | cut -f1) in $WHEELS: carry .whl"
}

# .venv/bin/python and .venv/bin/torchrun as wrappers of the machine's python3 (its torch), with
# the carried packages and the suite on PYTHONPATH: tools/pretrain.sh and the suite's commands
# call exactly these paths.
build_env() {
  local site="$VENV/site" machine
  machine="$(python3 -c 'import sys; print(sys.executable)')"
  rm -rf "$VENV" && mkdir -p "$VENV/bin" "$site" "$VENV/src"
  python3 -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
    --target "$site" "$WHEELS"/*.whl
  tar -xzf "$WHEELS"/pb1*detectron2-0.6.tar.gz -C "$VENV/src"
  local d2
  d2="$(ls -d "$VENV"/src/pb1*detectron2-0.6)"
  # numpy 2: the xtcocotools wheel is built against numpy 1, so build it from source here
  python3 -m pip install -q --disable-pip-version-check --no-index --no-deps --no-build-isolation \
    --target "$site" "$WHEELS"/xtcocotools-*.tar.gz \
    || log "xtcocotools did not build: the mpii_pose row will fail on its import"
  local path="$site:$d2:$ROOT"
  printf '#!/bin/sh\nPYTHONPATH="%s${PYTHONPATH:+:$PYTHONPATH}" exec "%s" "$@"\n' \
    "$path" "$machine" > "$VENV/bin/python"
  printf '#!/bin/sh\nexec "%s" -m torch.distributed.run "$@"\n' "$VENV/bin/python" \
    > "$VENV/bin/torchrun"
  chmod +x "$VENV/bin/python" "$VENV/bin/torchrun"
}

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  fetch_wheels
  exit 0
fi
cd "$ROOT"
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  log "python: $VENV/bin/python"
elif python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null && [[ -d "$WHEELS" ]]; then
  log "building $VENV on the machine's python3 and torch from $WHEELS"
  build_env
  "$VENV/bin/python" -c "import transfer.compat as c; c.apply(); import detectron2.modeling, \
mmpose.models; print('detectron2', __import__('detectron2').__version__, '| mmpose', \
__import__('mmpose').__version__, '| torch', __import__('torch').__version__)" \
    || log "the engines do not import: their rows will fail with the reason"
  log "environment ready"
else
  echo "gpu_check.sh: no python with torch: run tools/bootstrap.sh, or carry .whl (made by" \
       "'bash tools/gpu_check.sh --fetch-wheels') to a machine whose python3 has CUDA torch" >&2
  exit 2
fi
exec "$VENV/bin/python" tools/gpu_check.py "$@"
