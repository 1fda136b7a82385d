#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine: the real upstream registry
# (CNCF distribution), the real clients (skopeo, containerd's ctr), redis-server, nginx and wrk
# for benchmarks, kubectl (kubernetes-client) to render the Kubernetes manifests, chromium (the
# dashboard's tests drive it headless with playwright-core), Ceph's monitor, OSD and RADOS
# Gateway (a real S3 server for the S3 backend's tests), and the npm
# dependencies. Run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(docker-registry skopeo containerd podman uidmap fuse-overlayfs redis-server nginx wrk openssl ca-certificates chromium ceph-mon ceph-osd radosgw ceph-common)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Debian's kubernetes-client (kubectl 1.20, kustomize v2.0.3) unless a kubectl is there already:
# dpkg refuses to overwrite another package's /usr/bin/kubectl (a newer kubectl, say).
command -v kubectl >/dev/null || missing+=(kubernetes-client)
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # The packages' install scripts would start their services on 0.0.0.0 and standard ports;
  # policy-rc.d answering 101 stops that. The tests start their own copies on 127.0.0.1.
  had_policy=0
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  if [ "$had_policy" -eq 0 ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ "$had_policy" -eq 1 ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

for tool in docker-registry skopeo ctr containerd podman redis-server nginx openssl script kubectl chromium ceph-mon ceph-osd radosgw radosgw-admin monmaptool; do
  command -v "$tool" >/dev/null || { echo "install-test-deps: $tool is still missing" >&2; exit 1; }
done

if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
