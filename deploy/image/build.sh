#!/usr/bin/env bash
# Builds deploy/Dockerfile, as it is, with buildah (`buildah bud --isolation
# chroot`: no container engine or daemon needed, works as root on a plain VM).
#
#   deploy/image/build.sh [--tag NAME] [--bases auto|pull|standin] [--refresh-standins]
#                         [--extra-ca FILE] [--iidfile FILE]
#
# Bases (the Dockerfile's NODE_IMAGE and RUNTIME_IMAGE):
#   auto     (default) use the images already in buildah's store, else pull
#            them, else make local stand-ins under the same names
#   pull     pull the real images (fail without registry access)
#   standin  make (or reuse) the stand-ins even if real images could be pulled
#
# The stand-ins are for machines without registry access, such as CI here:
#   node:24-bookworm-slim   a Debian bookworm root (debootstrap --variant=minbase)
#                           with the Node 24 binary of the "node" devDependency
#                           in /usr/local/bin and npm in /usr/local/lib/node_modules
#   gcr.io/distroless/nodejs24-debian12:nonroot
#                           /nodejs/bin/node, the shared libraries it loads,
#                           CA certificates, passwd/group with root and nonroot
#                           (65532), tzdata; no shell, no package manager
# They are made once per machine and kept in buildah's store and in the cache
# directory (debootstrap root, npm tarball); see docs/image.md.
# --refresh-standins makes them again from a fresh debootstrap and npm pack
# (Debian security updates, the newest npm 11).
#
# --extra-ca FILE (default: $CASTELLAN_BUILD_CA, else $NODE_EXTRA_CA_CERTS):
# extra CA certificates the build stages' npm trusts, for networks whose proxy
# intercepts TLS. They reach the build's RUN steps through bind mounts only;
# the final image never contains them.
#
# --iidfile FILE: write the built image's ID there (the tag may move if
# another build on the machine uses the same one).
#
# Needs root (buildah's chroot isolation, debootstrap), buildah, and for the
# stand-ins debootstrap and a prior `npm ci` (the Node binary comes from it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TAG=castellan:dev
BASES=${CASTELLAN_IMAGE_BASES:-auto}
EXTRA_CA=${CASTELLAN_BUILD_CA:-${NODE_EXTRA_CA_CERTS:-}}
if [ "$(id -u)" = 0 ]; then DEFAULT_CACHE=/var/cache/castellan-image; else DEFAULT_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/castellan-image; fi
CACHE=${CASTELLAN_IMAGE_CACHE:-$DEFAULT_CACHE}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
NPM_SPEC=${CASTELLAN_STANDIN_NPM:-npm@11}
IIDFILE=
REFRESH=
RUN_STAMP=$(date -u +%Y%m%dT%H%M%SZ)

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
    --tag=*) TAG=${1#*=}; shift ;;
    --bases) BASES=${2:?--bases needs a value}; shift 2 ;;
    --bases=*) BASES=${1#*=}; shift ;;
    --extra-ca) EXTRA_CA=${2:?--extra-ca needs a value}; shift 2 ;;
    --extra-ca=*) EXTRA_CA=${1#*=}; shift ;;
    --iidfile) IIDFILE=${2:?--iidfile needs a value}; shift 2 ;;
    --iidfile=*) IIDFILE=${1#*=}; shift ;;
    --refresh-standins) REFRESH=1; shift ;;
    -h|--help) usage ;;
    *) echo "build.sh: unknown argument: $1" >&2; usage ;;
  esac
done
case "$BASES" in auto|pull|standin) ;; *) echo "build.sh: --bases must be auto, pull or standin, not '$BASES'" >&2; exit 2 ;; esac
if [ -n "$EXTRA_CA" ] && [ ! -r "$EXTRA_CA" ]; then echo "build.sh: extra CA file not readable: $EXTRA_CA" >&2; exit 2; fi
command -v buildah >/dev/null || { echo "build.sh: buildah not found (sudo apt-get install -y buildah debootstrap)" >&2; exit 1; }

# The base images, read from the Dockerfile's ARG defaults so the two never differ.
arg_default() { sed -n "s/^ARG $1=//p" "$ROOT/deploy/Dockerfile" | head -n1; }
NODE_IMAGE=$(arg_default NODE_IMAGE)
RUNTIME_IMAGE=$(arg_default RUNTIME_IMAGE)
[ -n "$NODE_IMAGE" ] && [ -n "$RUNTIME_IMAGE" ] || { echo "build.sh: NODE_IMAGE/RUNTIME_IMAGE defaults not found in deploy/Dockerfile" >&2; exit 1; }

log() { printf '::: image: %s\n' "$*" >&2; }
have_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }
label_of() { buildah inspect --type image --format '{{index .OCIv1.Config.Labels "io.castellan.standin"}}' "$1" 2>/dev/null || true; }

# The Node 24 binary the "node" devDependency installed (npm ci), for this machine's architecture.
NODE_BIN="$ROOT/node_modules/node/bin/node"

# What the stand-ins are made from: a change to any of it makes new ones.
standin_recipe() {
  { sed -n '/^# >>> stand-ins/,/^# <<< stand-ins/p' "$0"; sha256sum "$NODE_BIN" | cut -d' ' -f1; echo "$NPM_SPEC $MIRROR"; } | sha256sum | cut -c1-16
}

# >>> stand-ins
bookworm_root() {
  local dir="$CACHE/bookworm-minbase"
  if [ ! -e "$dir/.complete" ]; then
    command -v debootstrap >/dev/null || { echo "build.sh: debootstrap not found (sudo apt-get install -y debootstrap)" >&2; exit 1; }
    log "debootstrap bookworm (minbase) into $dir"
    rm -rf "$dir"
    mkdir -p "$CACHE"
    debootstrap --variant=minbase --include=ca-certificates,tzdata bookworm "$dir" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -n 20 "$CACHE/debootstrap.log" >&2; exit 1; }
    rm -rf "$dir/var/cache/apt/archives/"*.deb "$dir/var/lib/apt/lists/"*
    touch "$dir/.complete"
  fi
  printf '%s\n' "$dir"
}

npm_tarball() {
  local dir="$CACHE/npm"
  mkdir -p "$dir"
  if [ ! -e "$dir/$NPM_SPEC.tgz" ]; then
    log "npm pack $NPM_SPEC"
    local name
    name=$(cd "$dir" && npm pack --silent "$NPM_SPEC" | tail -n1)
    mv "$dir/$name" "$dir/$NPM_SPEC.tgz"
  fi
  printf '%s\n' "$dir/$NPM_SPEC.tgz"
}

make_node_standin() { # $1 image name, $2 recipe id
  local root tgz ctr mnt
  root=$(bookworm_root)
  tgz=$(npm_tarball)
  log "stand-in $1 (bookworm minbase + Node $("$NODE_BIN" --version) + $NPM_SPEC)"
  ctr=$(buildah from scratch)
  STANDIN_CTR=$ctr
  MADE_STANDIN=1
  mnt=$(buildah mount "$ctr")
  cp -a "$root/." "$mnt/"
  rm -f "$mnt/.complete"
  install -D -m 0755 "$NODE_BIN" "$mnt/usr/local/bin/node"
  mkdir -p "$mnt/usr/local/lib/node_modules/npm"
  tar -xzf "$tgz" -C "$mnt/usr/local/lib/node_modules/npm" --strip-components=1 --no-same-owner
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$mnt/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$mnt/usr/local/bin/npx"
  chroot "$mnt" groupadd --gid 1000 node
  chroot "$mnt" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  buildah umount "$ctr" >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$("$NODE_BIN" --version | tr -d v)" --cmd node \
    --label io.castellan.standin="$2" "$ctr"
  buildah commit -q --rm "$ctr" "$1" >/dev/null
  STANDIN_CTR=
}

make_runtime_standin() { # $1 image name, $2 recipe id
  local root ctr mnt lib
  root=$(bookworm_root)
  log "stand-in $1 (distroless layout from bookworm packages)"
  ctr=$(buildah from scratch)
  STANDIN_CTR=$ctr
  MADE_STANDIN=1
  mnt=$(buildah mount "$ctr")
  # bookworm's merged /usr, so library paths resolve as they do in Debian.
  mkdir -p "$mnt"/{usr/bin,usr/lib,usr/lib64,etc/ssl/certs,usr/share,nodejs/bin,dev,proc,sys,run,var,tmp,root,home/nonroot}
  ln -s usr/lib "$mnt/lib"
  ln -s usr/lib64 "$mnt/lib64"
  install -m 0755 "$NODE_BIN" "$mnt/nodejs/bin/node"
  # Exactly the libraries the dynamic loader resolves for node in that root.
  install -m 0755 "$NODE_BIN" "$root/tmp/castellan-node"
  for lib in $(chroot "$root" /usr/bin/ldd /tmp/castellan-node | grep -oE '/[^ ]+\.so[^ ]*'); do
    mkdir -p "$(dirname "$mnt$lib")"
    cp -L "$root$lib" "$mnt$lib"
  done
  rm -f "$root/tmp/castellan-node"
  cp -L "$root/etc/ssl/certs/ca-certificates.crt" "$mnt/etc/ssl/certs/ca-certificates.crt"
  cp -a "$root/usr/share/zoneinfo" "$mnt/usr/share/zoneinfo"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$mnt/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n' >"$mnt/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$mnt/etc/nsswitch.conf"
  printf 'PRETTY_NAME="Castellan stand-in for distroless nodejs24 (Debian 12 packages)"\nID=debian\nVERSION_ID="12"\n' >"$mnt/etc/os-release"
  chmod 1777 "$mnt/tmp"
  chmod 0700 "$mnt/root" "$mnt/home/nonroot"
  chown 65532:65532 "$mnt/home/nonroot"
  buildah umount "$ctr" >/dev/null
  buildah config --user 65532 --workingdir /home/nonroot --entrypoint '["/nodejs/bin/node"]' --cmd '' \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --label io.castellan.standin="$2" "$ctr"
  buildah commit -q --rm "$ctr" "$1" >/dev/null
  STANDIN_CTR=
}
# <<< stand-ins

# Returns 0 when the image may be used as it is in the store.
usable() { # $1 image, $2 recipe id
  have_image "$1" || return 1
  local l
  l=$(label_of "$1")
  [ -z "$l" ] && [ "$BASES" != standin ] && return 0 # a real (pulled) image
  [ "${l%%.*}" = "$2" ] # <recipe>.<when made>
}

prepare_base() { # $1 image, $2 maker
  local recipe=""
  if [ "$BASES" != pull ]; then
    [ -x "$NODE_BIN" ] || { echo "build.sh: $NODE_BIN missing: run 'npm ci' first (the stand-ins use its Node binary)" >&2; exit 1; }
    recipe=$(standin_recipe)
  fi
  if [ -n "$REFRESH" ] && [ "$BASES" != pull ]; then "$2" "$1" "$recipe.$RUN_STAMP"; return; fi
  case "$BASES" in
    pull) buildah pull -q "$1" >/dev/null ;;
    auto)
      if usable "$1" "$recipe"; then log "base $1: in the store"; return; fi
      if [ -z "$(label_of "$1")" ] && buildah pull -q "$1" >/dev/null 2>&1; then log "base $1: pulled"; return; fi
      "$2" "$1" "$recipe.$RUN_STAMP" ;;
    standin)
      if usable "$1" "$recipe"; then log "base $1: stand-in in the store"; return; fi
      "$2" "$1" "$recipe.$RUN_STAMP" ;;
  esac
}

# A stand-in's working container is removed if making it fails halfway.
STANDIN_CTR=
MADE_STANDIN=
work=
cleanup() {
  if [ -n "$STANDIN_CTR" ]; then buildah rm "$STANDIN_CTR" >/dev/null 2>&1 || true; fi
  if [ -n "$work" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 # one build per machine at a time: they share the stand-ins and the store
if [ -n "$REFRESH" ]; then rm -rf "$CACHE/bookworm-minbase" "$CACHE/npm"; fi

prepare_base "$NODE_IMAGE" make_node_standin
prepare_base "$RUNTIME_IMAGE" make_runtime_standin

# Extra CAs: npm's `cafile` replaces its trust store, so the file given to it is
# Node's own roots plus the extra ones; an npmrc naming it is mounted as npm's
# global config (/usr/local/etc/npmrc: node images install Node under /usr/local).
mounts=()
if [ -n "$EXTRA_CA" ]; then
  work=$(mktemp -d)
  "$NODE_BIN" -e 'process.stdout.write(require("tls").rootCertificates.join("\n") + "\n")' >"$work/ca.pem" 2>/dev/null \
    || node -e 'process.stdout.write(require("tls").rootCertificates.join("\n") + "\n")' >"$work/ca.pem"
  cat "$EXTRA_CA" >>"$work/ca.pem"
  printf 'cafile=/run/castellan-build/ca.pem\n' >"$work/npmrc"
  chmod 0644 "$work/ca.pem" "$work/npmrc"
  mounts+=(--volume "$work:/run/castellan-build:ro" --volume "$work/npmrc:/usr/local/etc/npmrc:ro")
  log "extra CA certificates for the build stages: $EXTRA_CA"
fi

log "buildah bud -> $TAG"
buildah bud --isolation chroot --layers --pull=never "${mounts[@]}" ${IIDFILE:+--iidfile "$IIDFILE"} \
  -f "$ROOT/deploy/Dockerfile" -t "$TAG" "$ROOT"

# When this run made new stand-ins, the untagged images built on earlier ones
# (the old stand-ins, their layer cache) can never be used again: remove them
# so the store does not grow by ~1.5 GB each time the stand-ins change. Tagged
# images stay, and so does everything built on pulled bases. Children go
# before their parents, hence the passes.
if [ -n "$MADE_STANDIN" ]; then
  log "removing untagged images built on earlier stand-ins"
  node_label=$(label_of "$NODE_IMAGE")
  runtime_label=$(label_of "$RUNTIME_IMAGE")
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    removed=0
    for id in $(buildah images --all --noheading --no-trunc --format '{{.ID}} {{.Name}}' | awk '$2 == "<none>" {sub(/^sha256:/, "", $1); print $1}'); do
      l=$(label_of "$id")
      if [ -n "$l" ] && [ "$l" != "$node_label" ] && [ "$l" != "$runtime_label" ] && buildah rmi "$id" >/dev/null 2>&1; then removed=$((removed + 1)); fi
    done
    [ "$removed" -gt 0 ] || break
  done
fi
