#!/usr/bin/env bash
# Installs what kyc-vision (issue #9) reads at start-up, so that nothing is fetched at run time:
#   - Debian packages: dlib (libdlib-dev), OpenBLAS (libopenblas0-pthread, libopenblas-pthread-dev)
#     and a CJK font (fonts-wqy-zenhei), with apt-get, when missing;
#   - models from PyPI distributions, with pip download: PP-OCRv4 ONNX files (rapidocr-onnxruntime),
#     libonnxruntime.so (onnxruntime), dlib's face models (face-recognition-models), and two
#     photographs of real faces for fixtures (scikit-image, matplotlib).
# Each downloaded file must match vision/assets.sha256 before anything in it is unpacked; each unpacked
# file must match vision/models.sha256. The models directory then gets MANIFEST.sha256 (sha256sum
# format, paths relative to it), for kyc-vision to check at start-up. Safe to run again: when every
# file is present and verified it downloads nothing and only says so.
#
#   scripts/install-vision.sh            install what is missing or corrupt
#   scripts/install-vision.sh --check    verify only: the packages, every model and the manifest
#   scripts/install-vision.sh --no-apt   leave Debian packages alone (report the missing ones)
#
# Models directory: --models DIR, else $KYC_VISION_MODELS, else vision/models (gitignored).
# Download cache:   --cache DIR,  else $KYC_VISION_CACHE,  else .tmp/vision-dl (gitignored).
set -euo pipefail

say() { printf '\033[1m[install-vision]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[install-vision]\033[0m %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
abs() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }

check=0 apt=1
models=${KYC_VISION_MODELS:+$(abs "$KYC_VISION_MODELS")}
cache=${KYC_VISION_CACHE:+$(abs "$KYC_VISION_CACHE")}
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check=1 ;;
    --no-apt) apt=0 ;;
    --models) [ $# -ge 2 ] || die "--models needs a directory"; models=$(abs "$2"); shift ;;
    --cache) [ $# -ge 2 ] || die "--cache needs a directory"; cache=$(abs "$2"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
  shift
done
cd "$(dirname "$0")/.."
root=$PWD
models=${models:-$root/vision/models}
cache=${cache:-$root/.tmp/vision-dl}
install_cmd="scripts/install-vision.sh"
started=$(now)

# --- What comes from where ------------------------------------------------------------------------
# Debian packages. libdlib-dev pulls libdlib19.1, libdlib-data and libblas3/liblapack3 (or OpenBLAS);
# libopenblas0-pthread makes OpenBLAS the libblas.so.3/liblapack.so.3 that dlib loads (~10x faster
# embeddings than the reference BLAS); libopenblas-pthread-dev gives the link-time names libopenblas.so,
# libblas.so and liblapack.so. See vision/README.md for the dlib-face-recognition crate's link names.
APT_PACKAGES=(libdlib-dev libopenblas0-pthread libopenblas-pthread-dev fonts-wqy-zenhei)

# Distributions: pinned file name -> pip requirement and how pip must fetch it. Wheels are chosen for
# CPython 3.11 on manylinux x86_64 whatever Python runs this script, so the pinned file is the one pip
# picks on any machine; nothing in them depends on the Python version.
declare -A REQ=(
  [rapidocr_onnxruntime-1.4.4-py3-none-any.whl]="rapidocr-onnxruntime==1.4.4"
  [onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl]="onnxruntime==1.31.1"
  [face_recognition_models-0.3.0.tar.gz]="face-recognition-models==0.3.0"
  [scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl]="scikit-image==0.26.0"
  [matplotlib-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl]="matplotlib==3.11.2"
)
WHEEL_OPTS=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi none
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64)
SDIST_OPTS=(--no-binary=:all:)

# Unpacked file (relative to the models directory) -> "distribution file|member inside it".
ocr=rapidocr_onnxruntime-1.4.4-py3-none-any.whl
ort=onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
frm=face_recognition_models-0.3.0.tar.gz
frm_dir=face_recognition_models-0.3.0
declare -A SOURCE=(
  [ocr/ch_PP-OCRv4_det_infer.onnx]="$ocr|rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
  [ocr/ch_PP-OCRv4_rec_infer.onnx]="$ocr|rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
  [ocr/ch_ppocr_mobile_v2.0_cls_infer.onnx]="$ocr|rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
  [ocr/config.yaml]="$ocr|rapidocr_onnxruntime/config.yaml"
  [onnxruntime/libonnxruntime.so.1.31.1]="$ort|onnxruntime/capi/libonnxruntime.so.1.31.1"
  [onnxruntime/LICENSE]="$ort|onnxruntime/LICENSE"
  [dlib/dlib_face_recognition_resnet_model_v1.dat]="$frm|$frm_dir/face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
  [dlib/mmod_human_face_detector.dat]="$frm|$frm_dir/face_recognition_models/models/mmod_human_face_detector.dat"
  [dlib/shape_predictor_5_face_landmarks.dat]="$frm|$frm_dir/face_recognition_models/models/shape_predictor_5_face_landmarks.dat"
  [dlib/shape_predictor_68_face_landmarks.dat]="$frm|$frm_dir/face_recognition_models/models/shape_predictor_68_face_landmarks.dat"
  [dlib/LICENSE]="$frm|$frm_dir/LICENSE"
  [faces/astronaut.png]="scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl|skimage/data/astronaut.png"
  [faces/grace_hopper.jpg]="matplotlib-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl|matplotlib/mpl-data/sample_data/grace_hopper.jpg"
)

# Pinned digests, read from the two committed lists ("sha256  name" lines, # comments).
declare -A ASSET_SHA MODEL_SHA
MODEL_ORDER=()
while read -r digest name; do ASSET_SHA[$name]=$digest; done < <(grep -v '^#' vision/assets.sha256)
while read -r digest name; do MODEL_SHA[$name]=$digest; MODEL_ORDER+=("$name"); done < <(grep -v '^#' vision/models.sha256)
for name in "${MODEL_ORDER[@]}"; do
  [ -n "${SOURCE[$name]:-}" ] || die "vision/models.sha256 lists $name, which this script does not know how to install"
  dist=${SOURCE[$name]%%|*}
  [ -n "${ASSET_SHA[$dist]:-}" ] || die "vision/assets.sha256 has no digest for $dist (needed for $name)"
done
[ "${#MODEL_ORDER[@]}" = "${#SOURCE[@]}" ] || die "vision/models.sha256 and this script disagree on the file list"

# --- 1. Debian packages ---------------------------------------------------------------------------
step=$(now)
missing_pkgs=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing_pkgs+=("$p")
done
if [ ${#missing_pkgs[@]} = 0 ]; then
  say "[1/3] Debian packages present: ${APT_PACKAGES[*]}"
elif [ "$check" = 1 ] || [ "$apt" = 0 ]; then
  say "[1/3] Debian packages MISSING: ${missing_pkgs[*]} (install with: apt-get install ${missing_pkgs[*]})"
  [ "$check" = 1 ] && pkg_problem=1
else
  if [ "$(id -u)" = 0 ]; then as_root=()
  elif command -v sudo >/dev/null; then as_root=(sudo)
  else die "Debian packages missing: ${missing_pkgs[*]}. Run this script as root, or install them: apt-get install ${missing_pkgs[*]}"
  fi
  say "[1/3] Debian packages missing: ${missing_pkgs[*]}"
  say "      running: ${as_root[*]:+${as_root[*]} }apt-get update && apt-get install -y --no-install-recommends ${missing_pkgs[*]}"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing_pkgs[@]}" >/dev/null
  say "      installed in $(since "$step"); BLAS now in use: $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo '?')"
fi

# --- 2. Verify the models directory ---------------------------------------------------------------
step=$(now)
bad=()
for name in "${MODEL_ORDER[@]}"; do
  f=$models/$name
  if [ ! -f "$f" ]; then bad+=("$name"); [ "$check" = 1 ] && say "      missing: $f"
  elif [ "$(sha "$f")" != "${MODEL_SHA[$name]}" ]; then bad+=("$name"); say "      corrupt (SHA-256 differs from vision/models.sha256): $f"
  fi
done
manifest=$models/MANIFEST.sha256
expected_manifest=$(for name in "${MODEL_ORDER[@]}"; do printf '%s  %s\n' "${MODEL_SHA[$name]}" "$name"; done)
manifest_ok=0
[ -f "$manifest" ] && [ "$(cat "$manifest")" = "$expected_manifest" ] && manifest_ok=1

if [ ${#bad[@]} = 0 ] && [ "$manifest_ok" = 1 ]; then
  size=$(du -sh "$models" | cut -f1)
  say "[2/3] models verified: ${#MODEL_ORDER[@]} files, $size in $models ($(since "$step"))"
  if [ "${pkg_problem:-0}" = 1 ]; then die "Debian packages missing; install them with: $install_cmd"; fi
  say "[3/3] nothing to do; done in $(since "$started")"
  exit 0
fi
if [ "$check" = 1 ]; then
  [ ${#bad[@]} = 0 ] || die "${#bad[@]} of ${#MODEL_ORDER[@]} model files missing or corrupt in $models; install them with: $install_cmd"
  die "$manifest is missing or stale; write it with: $install_cmd"
fi
say "[2/3] models: ${#bad[@]} of ${#MODEL_ORDER[@]} files to install into $models ($(since "$step"))"

# --- 3. Download, verify and unpack what is missing -----------------------------------------------
"${PYTHON:-python3}" -m pip --version >/dev/null 2>&1 \
  || die "pip is needed to download the models: install it (apt-get install python3-pip) or set PYTHON"
mkdir -p "$cache" "$models"

# Which distributions hold the files to install, in a stable order.
declare -A NEED
for name in "${bad[@]}"; do dist=${SOURCE[$name]%%|*}; NEED[$dist]+="$name "; done
mapfile -t dists < <(printf '%s\n' "${!NEED[@]}" | sort)

for dist in "${dists[@]}"; do
  step=$(now)
  file=$cache/$dist
  if [ -f "$file" ] && [ "$(sha "$file")" = "${ASSET_SHA[$dist]}" ]; then
    say "[3/3] $dist: in the cache, SHA-256 verified"
  else
    if [ -f "$file" ]; then
      die "SHA-256 mismatch for $file: expected ${ASSET_SHA[$dist]}, got $(sha "$file"). Refusing to unpack it. If it is a broken download, delete it and run again: rm '$file'"
    fi
    case "$dist" in *.whl) opts=("${WHEEL_OPTS[@]}") ;; *) opts=("${SDIST_OPTS[@]}") ;; esac
    say "[3/3] $dist: pip download ${REQ[$dist]}"
    "${PYTHON:-python3}" -m pip download --quiet --progress-bar off --no-deps "${opts[@]}" \
      --dest "$cache" "${REQ[$dist]}" \
      || die "pip download ${REQ[$dist]} failed (see above); nothing was unpacked"
    [ -f "$file" ] || die "pip saved a different file for ${REQ[$dist]} than the pinned $dist: see $cache"
    got=$(sha "$file")
    [ "$got" = "${ASSET_SHA[$dist]}" ] \
      || die "SHA-256 mismatch for $file: expected ${ASSET_SHA[$dist]} (vision/assets.sha256), got $got. Refusing to unpack it."
    say "      downloaded $(du -h "$file" | cut -f1), SHA-256 verified ($(since "$step"))"
  fi

  # Unpack only the named members, each through a temporary file renamed into place.
  pairs=()
  for name in ${NEED[$dist]}; do pairs+=("${SOURCE[$name]#*|}=$name"); done
  "${PYTHON:-python3}" - "$file" "$models" "${pairs[@]}" <<'PY' || die "could not unpack $dist"
import os, shutil, sys, tarfile, zipfile

archive, out, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
want = dict(p.split("=", 1) for p in pairs)

def put(src, dest):
    path = os.path.join(out, dest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".part", "wb") as f:
        shutil.copyfileobj(src, f, 1 << 20)
    os.replace(path + ".part", path)

if archive.endswith(".whl"):
    with zipfile.ZipFile(archive) as z:
        for member, dest in want.items():
            with z.open(member) as src:
                put(src, dest)
else:
    with tarfile.open(archive, "r:gz") as t:
        for info in t:
            dest = want.pop(info.name, None)
            if dest is not None and info.isfile():
                put(t.extractfile(info), dest)
    if want:
        sys.exit(f"not in {archive}: {', '.join(want)}")
PY
  for name in ${NEED[$dist]}; do
    got=$(sha "$models/$name")
    [ "$got" = "${MODEL_SHA[$name]}" ] \
      || die "unpacked $models/$name has SHA-256 $got, not ${MODEL_SHA[$name]} (vision/models.sha256)"
    say "      $name ($(du -h "$models/$name" | cut -f1)) verified"
  done
done

printf '%s\n' "$expected_manifest" > "$manifest.part" && mv "$manifest.part" "$manifest"
say "wrote $manifest (${#MODEL_ORDER[@]} files, $(du -sh "$models" | cut -f1)); done in $(since "$started")"
