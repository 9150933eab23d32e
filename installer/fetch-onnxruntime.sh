#!/usr/bin/env bash
# Obtain libonnxruntime.so for the detector plugins without a manual step.
#   1. $ONNXRUNTIME_LIB, if set, is used as it is.
#   2. Otherwise the pinned npm package onnxruntime-node is fetched with npm
#      (its tarball carries bin/napi-v6/linux/x64/libonnxruntime.so.1), its
#      SHA-256 checked, and the library unpacked into a git-ignored cache.
# Prints the path of the library on stdout.
set -euo pipefail
ORT_VERSION=1.24.3   # ONNX Runtime C API 24, as github.com/yalue/onnxruntime_go v1.27.0 expects
ORT_TGZ_SHA256=aa1bb5fa261ea68de05dd53efbba210cd7adf2d2850f4c3a201054c74cc78040
cache=${VIGIL_CACHE:-$(cd "$(dirname "$0")/.." && pwd)/.cache}/onnxruntime-$ORT_VERSION
lib=$cache/libonnxruntime.so

if [ -n "${ONNXRUNTIME_LIB:-}" ]; then
  [ -f "$ONNXRUNTIME_LIB" ] || { echo "ONNXRUNTIME_LIB=$ONNXRUNTIME_LIB does not exist" >&2; exit 1; }
  echo "$ONNXRUNTIME_LIB"; exit 0
fi
if [ -f "$lib" ]; then echo "$lib"; exit 0; fi

command -v npm >/dev/null || { echo "npm is needed to fetch onnxruntime-node@$ORT_VERSION (or set ONNXRUNTIME_LIB)" >&2; exit 1; }
mkdir -p "$cache"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null)
tgz=$tmp/onnxruntime-node-$ORT_VERSION.tgz
echo "$ORT_TGZ_SHA256  $tgz" | sha256sum -c --quiet - >&2 || { echo "checksum mismatch for onnxruntime-node-$ORT_VERSION.tgz" >&2; exit 1; }
tar -xzf "$tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
install -m 0644 "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$lib.tmp"
mv "$lib.tmp" "$lib"
echo "$lib"
