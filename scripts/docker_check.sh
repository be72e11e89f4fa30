#!/usr/bin/env bash
# Build the Dockerfile for real and run what it makes: the CLI in a container without a
# network tags a mounted photo; the app container answers its health check, turns healthy
# and runs as a non-root user. Needs root, Debian's docker.io and debootstrap.
# The API container (`image-tags serve`, with a key) tags a posted photo and refuses one without the key.
#
#   bash scripts/docker_check.sh PHOTO.jpg
#
# No registry is used. Docker's engine is started here if none runs (no bridge network, no
# iptables: containers get no network of their own). The Dockerfile's FROM image is made
# locally as a stand-in: Debian bookworm with Python 3.11 and pip from Debian's mirror, and
# the wheels of requirements.txt from PyPI in /wheels, where the image's pip finds them
# (PIP_NO_INDEX, PIP_FIND_LINKS). The stand-in has a name of its own (with a hash of
# requirements.txt, so new requirements make a new one) and reaches the build as the BASE
# build argument: the official name python:3.11-slim-bookworm is never shadowed on this host.
# Then `docker build --network none` builds the real Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
photo=${1:?a photo to tag}
base="image-tags-standin/python:3.11-slim-bookworm-$(sha256sum requirements.txt | cut -c1-12)"
image="image-tags:check"
work=$(mktemp -d)
app=""
api=""
cleanup() {
  [ -n "$app" ] && docker rm -f "$app" >/dev/null 2>&1 || true
  [ -n "$api" ] && docker rm -f "$api" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (no bridge, no iptables)"
  dockerd --bridge=none --iptables=false >/tmp/image-tags-dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null
fi

# Earlier versions of this script tagged their stand-in with the official name: give that name back.
official="python:3.11-slim-bookworm"
if docker image inspect -f '{{json .Config.Env}}' "$official" 2>/dev/null | grep -q 'PIP_FIND_LINKS=/wheels'; then
  echo "removing an old stand-in that took the name $official"
  docker rmi "$official" >/dev/null
fi

if ! docker image inspect "$base" >/dev/null 2>&1; then
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "making the stand-in for $base from $mirror"
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log"; exit 1; }
  rm -f "$work"/rootfs/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf python3 "$work/rootfs/usr/bin/python"
  ln -sf pip3 "$work/rootfs/usr/bin/pip"
  grep -v '^\.$' requirements.txt >"$work/requirements.txt"
  python3 -m pip download -q --only-binary=:all: --python-version 3.11 -d "$work/rootfs/wheels" \
    -r "$work/requirements.txt" setuptools wheel
  tar -C "$work/rootfs" -c . | docker import -c 'ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels' - "$base" >/dev/null
fi

echo "building $image"
docker build -q --network none --build-arg BASE="$base" -t "$image" . >/dev/null

echo "the CLI in a container without a network"
mkdir "$work/photos"
cp "$photo" "$work/photos/"
chmod -R a+rX "$work/photos"
docker run --rm --network none -v "$work/photos:/photos:ro" "$image" tag /photos --format jsonl | tee "$work/tags.jsonl"
grep -q '"tags"' "$work/tags.jsonl"

echo "the app container"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
app=$(docker run -d --network host -e PORT="$port" "$image")
for _ in $(seq 90); do
  curl -fsS "http://127.0.0.1:$port/_stcore/health" >/dev/null 2>&1 && break
  sleep 1
done
echo "health: $(curl -fsS "http://127.0.0.1:$port/_stcore/health")"
for _ in $(seq 120); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$app")
  [ "$status" = healthy ] && break
  sleep 1
done
echo "container: $status"
[ "$status" = healthy ]
user=$(docker exec "$app" id -u)
echo "user id: $user"
[ "$user" != 0 ]

echo "the API container (image-tags serve, with a key)"
api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
api=$(docker run -d --network host -e IMAGE_TAGS_API_KEYS=check-key "$image" serve --port "$api_port")
for _ in $(seq 60); do
  curl -fsS "http://127.0.0.1:$api_port/healthz" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS -H "Authorization: Bearer check-key" --data-binary "@$photo" "http://127.0.0.1:$api_port/v1/tags" \
  | tee "$work/api.json"; echo
grep -q '"label":"dog"' "$work/api.json"
refused=$(curl -s -o /dev/null -w '%{http_code}' --data-binary "@$photo" "http://127.0.0.1:$api_port/v1/tags")
echo "api without a key: $refused"
[ "$refused" = 401 ]
echo "docker check passed"
