#!/usr/bin/env bash
# Idempotent setup of a fresh machine: system packages the tests need, then the project's virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages (no network beyond the package registry): espeak-ng speaks the audio tests' speech; tcmalloc is
# the host allocator of every project command (headgan_jax/host_malloc.py: XLA:CPU runs 1.4x faster with it);
# oneDNN (libdnnl-dev) and g++ build the CPU convolution handlers (headgan_jax/kernels/onednn.py).
PACKAGES=()
command -v espeak-ng >/dev/null 2>&1 || PACKAGES+=(espeak-ng)
/sbin/ldconfig -p 2>/dev/null | grep -q 'libtcmalloc_minimal\.so\.4' || PACKAGES+=(libtcmalloc-minimal4)
[ -f /usr/include/oneapi/dnnl/dnnl.hpp ] || PACKAGES+=(libdnnl-dev)
command -v g++ >/dev/null 2>&1 || PACKAGES+=(g++)
if [ ${#PACKAGES[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --no-compile -r requirements.txt
# Byte-compiled on every core instead (pip compiles one file at a time: 20-40 s of this 2-core machine's setup). A
# few packages ship files that are not Python 3 (templates, examples); pip skips those too, so their errors are not
# fatal here.
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
.venv/bin/python -m compileall -q -j 0 "$SITE" >/dev/null 2>&1 || true
# The project itself (pyproject.toml), editable and without dependencies (requirements.txt above is the list):
# headgan_jax and configs import from any folder (config files, bench/, scripts/, TFDS's builders loaded by path) and
# the headgan-* commands are on the venv's PATH. The venv's setuptools when it can build wheels (no download).
BUILD_ISOLATION=()
.venv/bin/python -c 'import importlib.util as u, sys; sys.exit(not (u.find_spec("wheel") or
  u.find_spec("setuptools.command.bdist_wheel")))' 2>/dev/null && BUILD_ISOLATION=(--no-build-isolation)
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "${BUILD_ISOLATION[@]}" -e .
# The face tracker's model files (MediaPipe 0.10.14 wheel, Apache-2.0): pip downloads the wheel, nothing is installed;
# the .tflite files are sha256-checked into ~/.cache/headgan_jax/mediapipe-0.10.14.
.venv/bin/python -m headgan_jax.tracking.facemesh fetch
# oneDNN convolutions for XLA:CPU (conv_impl 'auto'): compiled once into ~/.cache/headgan_jax/onednn (a few seconds).
.venv/bin/python -m headgan_jax.kernels.onednn build >/dev/null
