#!/usr/bin/env bash
# Build TensorRT's Python bindings for another Python than the one JetPack ships them for (Python 3.8 on a
# Jetson Nano with JetPack 4.6.x, whose python3-libnvinfer is for Python 3.6 only), from NVIDIA's own sources,
# against the TensorRT libraries JetPack installed; then install the wheel into a virtual environment.
#
# It does what NVIDIA/TensorRT's python/README.md and python/build.sh do at the tag of the installed TensorRT
# (8.2.1 for JetPack 4.6.1+, 8.0.1 for JetPack 4.6), with the choices the issue threads needed:
#   - pybind11 v2.9.x: with pybind11 master the wheel imports fail ("No module named 'tensorrt.tensorrt'",
#     NVIDIA/TensorRT#2288, fixed there with the v2.9 branch; #3388 also built with v2.9);
#   - the parsers/onnx submodule: python/include/ForwardDeclarations.h includes "onnx/NvOnnxParser.h" from
#     TENSORRT_ROOT/parsers (CMakeLists.txt ONNX_INC_DIR; the onnx header errors of #2790);
#   - the Python headers of the Python the bindings are for, laid out as CMakeLists.txt looks for them
#     (EXT_PATH/pythonX.Y/include/Python.h, pyconfig.h there or under <target>-linux-gnu/pythonX.Y);
#   - TENSORRT_BUILD = the folder with JetPack's libnvinfer.so (CMakeLists.txt link_directories);
#   - make -j2, not build.sh's make -j12: a 4 GB Nano runs out of memory compiling pybind11 code in parallel;
#   - built on the Jetson itself: a wheel cross-built on a PC held no tensorrt.so (NVIDIA/TensorRT#3388).
# See docs_tensorrt.md ("The Jetson Nano's Python") for the whole route and its sources.
set -euo pipefail

PYTHON=python3.8
WORKDIR="${HOME:-/tmp}/tensorrt-python"
VENV=""
JOBS=2
TAG=""
PYBIND11_TAG=v2.9.2
TENSORRT_SRC=""
PYBIND11_SRC=""
DRY_RUN=0
FORCE=0
TRT_INCLUDE_DIR="${TRT_INCLUDE_DIR:-/usr/include/aarch64-linux-gnu}"
TRT_LIB_DIR="${TRT_LIB_DIR:-/usr/lib/aarch64-linux-gnu}"
CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}"
TARGET="${TARGET:-aarch64}"
TENSORRT_GIT=https://github.com/NVIDIA/TensorRT
PYBIND11_GIT=https://github.com/pybind/pybind11

usage() {
    cat <<'USAGE'
usage: scripts/build_tensorrt_python.sh [options]

Builds TensorRT's Python bindings (the 'tensorrt' module) for PYTHON from NVIDIA/TensorRT's python/ folder at
the tag of the TensorRT installed here, and installs the wheel into --venv.

  --python PY          the Python to build for (default: python3.8; apt install python3.8 python3.8-dev
                       python3.8-venv on JetPack 4)
  --venv DIR           create (if missing) a virtual environment with PY there and install the wheel into it
  --workdir DIR        where sources and the build go (default: ~/tensorrt-python); must not exist or be empty
  --force              reuse a non-empty --workdir (its TensorRT/python/build folder is rebuilt)
  --tensorrt-tag TAG   NVIDIA/TensorRT tag to build (default: from NvInferVersion.h: 8.2.1, 8.0.1, ...)
  --tensorrt-src DIR   an existing checkout of that tag (with parsers/onnx) instead of cloning
  --pybind11-src DIR   an existing pybind11 v2.9 checkout instead of cloning
  --jobs N             parallel compile jobs (default: 2; each takes ~1 GB on a Nano)
  --dry-run            print every step and check what it can, change nothing
  -h, --help           this text

Environment: TRT_INCLUDE_DIR (default /usr/include/aarch64-linux-gnu), TRT_LIB_DIR (/usr/lib/aarch64-linux-gnu),
CUDA_ROOT (/usr/local/cuda), TARGET (aarch64).
USAGE
}

die() {
    echo "build_tensorrt_python.sh: error: $*" >&2
    exit 1
}

note() {
    echo "build_tensorrt_python.sh: $*" >&2
}

# Checks that a dry run reports and goes past; a real run stops at the first.
problem() {
    if ((DRY_RUN)); then
        note "would stop here: $*"
    else
        die "$*"
    fi
}

run() {
    if ((DRY_RUN)); then
        printf '+ %s\n' "$*"
    else
        "$@"
    fi
}

run_in() {
    local dir=$1
    shift
    if ((DRY_RUN)); then
        printf '+ (cd %s) %s\n' "$dir" "$*"
    else
        (cd "$dir" && "$@")
    fi
}

while (($#)); do
    case $1 in
    --python) PYTHON=${2:?--python needs a value}; shift ;;
    --venv) VENV=${2:?--venv needs a value}; shift ;;
    --workdir) WORKDIR=${2:?--workdir needs a value}; shift ;;
    --tensorrt-tag) TAG=${2:?--tensorrt-tag needs a value}; shift ;;
    --tensorrt-src) TENSORRT_SRC=${2:?--tensorrt-src needs a value}; shift ;;
    --pybind11-src) PYBIND11_SRC=${2:?--pybind11-src needs a value}; shift ;;
    --jobs) JOBS=${2:?--jobs needs a value}; shift ;;
    --force) FORCE=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
    esac
    shift
done
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "--jobs '$JOBS': expected a positive number"

# ---- which TensorRT is installed, and which NVIDIA/TensorRT tag has its bindings' sources
version_h="$TRT_INCLUDE_DIR/NvInferVersion.h"
installed=""
if [[ -f $version_h ]]; then
    define() { awk -v key="NV_TENSORRT_$1" '$1 == "#define" && $2 == key { print $3 }' "$version_h"; }
    installed="$(define MAJOR).$(define MINOR).$(define PATCH)"
fi
if [[ -z $TAG ]]; then
    [[ -n $installed ]] || die "no $version_h (TensorRT's headers, JetPack's libnvinfer-dev): install it" \
        "(sudo apt install nvidia-tensorrt) or set TRT_INCLUDE_DIR, or give --tensorrt-tag"
    case $installed in
    # tags of NVIDIA/TensorRT whose python/ folder builds with this script (JetPack 4: 8.0.1, 8.2.1)
    8.0.1 | 8.2.1 | 8.4.1 | 8.4.3 | 8.5.1 | 8.5.2 | 8.5.3) TAG=$installed ;;
    *) die "TensorRT $installed is installed; no NVIDIA/TensorRT tag of that name is known to this script:" \
        "give the tag whose python/ folder matches it with --tensorrt-tag" ;;
    esac
elif [[ -n $installed && $TAG != "$installed" && $TAG != "v$installed" ]]; then
    note "warning: building the bindings of tag $TAG against the installed TensorRT $installed"
fi

# ---- the work folder: never reuse what someone put there without --force
if [[ -d $WORKDIR && -n $(ls -A "$WORKDIR" 2>/dev/null) && $FORCE -eq 0 ]]; then
    die "$WORKDIR exists and is not empty; pass --force to build in it again, or choose another --workdir"
fi

# ---- the Python the bindings are for
read -r PY_MAJOR PY_MINOR < <("$PYTHON" -c 'import sys; print(*sys.version_info[:2])' 2>/dev/null) ||
    die "cannot run '$PYTHON': on JetPack 4: sudo apt install python3.8 python3.8-dev python3.8-venv"
PYV="$PY_MAJOR.$PY_MINOR"
py_include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
py_config=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_h_filename())')
[[ -f $py_include/Python.h ]] || problem "no $py_include/Python.h: sudo apt install python$PYV-dev"
[[ -f $py_config ]] || problem "no $py_config (pyconfig.h): sudo apt install python$PYV-dev"

# ---- the machine: build on the Jetson itself, against JetPack's libraries
machine=$(uname -m)
[[ $machine == "$TARGET" ]] || problem "this machine is $machine, TARGET is $TARGET: build on the Jetson" \
    "itself (a wheel cross-built on a PC held no working tensorrt.so, NVIDIA/TensorRT#3388)"
[[ -e $TRT_LIB_DIR/libnvinfer.so ]] || problem "no $TRT_LIB_DIR/libnvinfer.so: install TensorRT's development" \
    "package (sudo apt install nvidia-tensorrt) or set TRT_LIB_DIR"
[[ -f $CUDA_ROOT/include/cuda_runtime_api.h ]] || problem "no $CUDA_ROOT/include/cuda_runtime_api.h:" \
    "install JetPack's CUDA (sudo apt install nvidia-cuda) or set CUDA_ROOT"
for tool in git cmake make c++; do
    command -v "$tool" >/dev/null || problem "'$tool' is missing: sudo apt install git cmake build-essential"
done

TRT_SRC=${TENSORRT_SRC:-$WORKDIR/TensorRT}
EXT=$WORKDIR/external
BUILD=$TRT_SRC/python/build
if [[ -n $VENV ]]; then
    PKG_PY=$VENV/bin/python
elif ! "$PYTHON" -c 'import setuptools, wheel' 2>/dev/null; then
    problem "'$PYTHON' has no setuptools/wheel to make the wheel: give --venv DIR (recommended), or" \
        "$PYTHON -m pip install setuptools wheel"
    PKG_PY=$PYTHON
else
    PKG_PY=$PYTHON
fi

note "TensorRT ${installed:-?} (tag $TAG), Python $PYV ($PYTHON), pybind11 ${PYBIND11_SRC:-$PYBIND11_TAG}, target $TARGET," \
    "work folder $WORKDIR, $JOBS compile jobs$( ((DRY_RUN)) && echo ', dry run')"

# ---- sources: NVIDIA/TensorRT at the tag (+ parsers/onnx), pybind11 v2.9, this Python's headers
run mkdir -p "$WORKDIR" "$EXT"
if [[ -z $TENSORRT_SRC && ! -d $TRT_SRC/.git ]]; then
    run git clone --depth 1 --branch "$TAG" "$TENSORRT_GIT" "$TRT_SRC"
fi
if [[ ! -f $TRT_SRC/parsers/onnx/NvOnnxParser.h ]]; then
    run git -C "$TRT_SRC" submodule update --init parsers/onnx
fi
if [[ -n $PYBIND11_SRC ]]; then
    run ln -sfn "$(cd "$PYBIND11_SRC" && pwd)" "$EXT/pybind11"
elif [[ ! -d $EXT/pybind11/.git ]]; then
    run git clone --depth 1 --branch "$PYBIND11_TAG" "$PYBIND11_GIT" "$EXT/pybind11"
fi
py_ext=$EXT/python$PYV/include
run mkdir -p "$py_ext/$TARGET-linux-gnu/python$PYV"
run cp -r "$py_include/." "$py_ext/"
run cp "$py_config" "$py_ext/$TARGET-linux-gnu/python$PYV/pyconfig.h"

# ---- tensorrt.so, as python/build.sh builds it (its cmake arguments; its own TENSORRT_BUILD is the OSS build
# folder, here it is the folder with JetPack's libraries)
if ((FORCE)); then
    run rm -rf "$BUILD"
fi
run mkdir -p "$BUILD"
run_in "$BUILD" cmake .. -DCMAKE_BUILD_TYPE=Release -DTARGET="$TARGET" \
    -DPYTHON_MAJOR_VERSION="$PY_MAJOR" -DPYTHON_MINOR_VERSION="$PY_MINOR" -DEXT_PATH="$EXT" \
    -DCUDA_INCLUDE_DIRS="$CUDA_ROOT/include" -DTENSORRT_ROOT="$TRT_SRC" -DTENSORRT_BUILD="$TRT_LIB_DIR"
run_in "$BUILD" make -j"$JOBS"

# ---- the wheel, as python/build.sh makes it: packaging/ with the version filled in, then bdist_wheel
if [[ -n $VENV && ! -x $VENV/bin/python ]]; then
    run "$PYTHON" -m venv "$VENV"
fi
if [[ -n $VENV ]]; then
    run "$VENV/bin/python" -m pip install --upgrade pip setuptools wheel
fi
trt_version=${TAG#v}
if [[ -f $TRT_SRC/include/NvInferVersion.h ]]; then
    src_define() { awk -v key="NV_TENSORRT_$1" '$1 == "#define" && $2 == key { print $3 }' "$TRT_SRC/include/NvInferVersion.h"; }
    trt_version="$(src_define MAJOR).$(src_define MINOR).$(src_define PATCH).$(src_define BUILD)"
fi
majminpatch=$(echo "$trt_version" | cut -d. -f1-3)
if ((DRY_RUN)); then
    printf '+ fill %s/python/packaging/* into %s (##TENSORRT_VERSION## -> %s, ##TENSORRT_MAJMINPATCH## -> %s)\n' \
        "$TRT_SRC" "$BUILD" "$trt_version" "$majminpatch"
else
    (cd "$TRT_SRC/python/packaging" && find . -type d -exec mkdir -p "$BUILD/{}" \;)
    while IFS= read -r -d '' file; do
        sed -e "s|##TENSORRT_VERSION##|$trt_version|g" -e "s|##TENSORRT_MAJMINPATCH##|$majminpatch|g" \
            "$TRT_SRC/python/packaging/$file" >"$BUILD/$file"
    done < <(cd "$TRT_SRC/python/packaging" && find . -type f -print0)
fi
run_in "$BUILD" "$PKG_PY" setup.py -q bdist_wheel --python-tag="cp$PY_MAJOR$PY_MINOR" --plat-name="linux_$TARGET"

wheel="$BUILD/dist/tensorrt-$trt_version-cp$PY_MAJOR$PY_MINOR-none-linux_$TARGET.whl"
if ((!DRY_RUN)); then
    found=("$BUILD"/dist/tensorrt-*-cp"$PY_MAJOR$PY_MINOR"-*.whl)
    [[ -f ${found[0]} ]] || die "no wheel in $BUILD/dist; see the messages above"
    wheel=${found[0]}
fi
if [[ -n $VENV ]]; then
    run "$VENV/bin/python" -m pip install --force-reinstall --no-deps "$wheel"
    run "$VENV/bin/python" -c "import tensorrt; print('tensorrt', tensorrt.__version__, 'for Python $PYV')"
fi
if ((DRY_RUN)); then
    note "dry run: nothing was changed"
elif [[ -n $VENV ]]; then
    note "done: $VENV has the tensorrt module; install trt_perception there (pip install -e <repo>)"
else
    note "done: $wheel; install it into your Python $PYV environment with: $PYTHON -m pip install $wheel"
fi
