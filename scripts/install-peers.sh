#!/usr/bin/env bash
# Install the peer video-hashing libraries compared by the benchmarks (src/vidsearch/evaluate/peers.py)
# into a venv: perception's TMKL2, tmkpy (TMK+PDQF) and videohash. Everything comes from PyPI; the
# ffmpeg binary is the one inside PyPI's imageio-ffmpeg and SWIG (tmkpy's build only) is PyPI's swig
# wheel, so no apt and no root are needed (g++ and make must be there, as on this machine kind).
#
# Usage: bash scripts/install-peers.sh [VENV]      (VENV defaults to .venv)
# Idempotent: a peer that already imports is left alone. A peer that fails to install prints a
# warning and the script goes on; it always exits 0 (available_peers() then says what is missing).
set -u

VENV="${1:-.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "warning: install-peers: $PY not found; create the venv first (make install). No peer installed." >&2
  exit 0
fi
PIP=("$PY" -m pip install -q --disable-pip-version-check)

# Versions these wrappers were tested with.
PERCEPTION="perception==0.9.3"
# (numpy, scipy and Pillow come with vidsearch; listed so a bare venv works too)
PERCEPTION_DEPS=("opencv-contrib-python-headless==4.14.0.94" "tqdm>=4.67.1,<5" "validators>=0.22,<1" "PyWavelets>=1.5,<2"
                 numpy scipy Pillow)
FFMPEG="imageio-ffmpeg==0.8.1"
TMKPY="tmkpy==0.1.1"
SWIG="swig==4.5.1"
VIDEOHASH="videohash==3.0.1"
VIDEOHASH_DEPS=("ImageHash==4.3.2" "imagedominantcolor==1.0.1")

warn() { echo "warning: install-peers: $*" >&2; }
imports() { "$PY" -c "$1" >/dev/null 2>&1; }
failed=()

# ---- ffmpeg binary (tmkpy and videohash call it)
if ! imports "import imageio_ffmpeg, os; assert os.path.isfile(imageio_ffmpeg.get_ffmpeg_exe())"; then
  "${PIP[@]}" "$FFMPEG" || warn "could not install $FFMPEG (tmkpy and videohash will look for ffmpeg on PATH)"
fi

# ---- perception-tmkl2: perception itself (--no-deps: it pins rich<14) and what perception.hashers imports
if ! imports "import perception.hashers"; then
  if "${PIP[@]}" --no-deps --ignore-requires-python "$PERCEPTION" && "${PIP[@]}" "${PERCEPTION_DEPS[@]}" \
      && imports "import perception.hashers"; then
    echo "install-peers: perception-tmkl2 installed"
  else
    warn "perception-tmkl2 not installed"; failed+=(perception-tmkl2)
  fi
fi

# ---- tmkpy: built from its sdist with SWIG from a throw-away folder
if ! imports "import tmkpy"; then
  tmp="$(mktemp -d)"
  swig_bin="" swig_lib=""
  if "$PY" -m pip install -q --disable-pip-version-check --target "$tmp/swig" "$SWIG"; then
    swig_bin="$tmp/swig/swig/data/bin"
    swig_lib="$(ls -d "$tmp"/swig/swig/data/share/swig/* 2>/dev/null | head -n 1)"
  fi
  if [ -z "$swig_lib" ] && command -v swig >/dev/null; then
    swig_bin="$(dirname "$(command -v swig)")"; swig_lib=""   # a system swig knows its own library
  fi
  if [ -z "$swig_bin" ]; then
    warn "tmkpy not installed: no SWIG (pip '$SWIG' failed and no swig on PATH)"; failed+=(tmkpy)
  elif ! command -v g++ >/dev/null || ! command -v make >/dev/null; then
    warn "tmkpy not installed: it compiles C++ and needs g++ and make"; failed+=(tmkpy)
  elif env PATH="$swig_bin:$PATH" ${swig_lib:+SWIG_LIB="$swig_lib"} "${PIP[@]}" "$TMKPY" && imports "import tmkpy"; then
    echo "install-peers: tmkpy installed"
  else
    warn "tmkpy not installed (build failed; rerun with pip -v to see why)"; failed+=(tmkpy)
  fi
  rm -rf "$tmp"
fi

# ---- videohash: --no-deps to leave out yt-dlp (only used to download URLs, never here)
if ! imports "import videohash, imagehash, imagedominantcolor"; then
  if "${PIP[@]}" --no-deps "$VIDEOHASH" && "${PIP[@]}" "${VIDEOHASH_DEPS[@]}" \
      && imports "import videohash, imagehash, imagedominantcolor"; then
    echo "install-peers: videohash installed"
  else
    warn "videohash not installed"; failed+=(videohash)
  fi
fi

if [ ${#failed[@]} -gt 0 ]; then
  warn "peers not available: ${failed[*]} (the benchmarks and tests skip them)"
fi
exit 0
