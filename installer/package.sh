#!/usr/bin/env bash
# Build the release artifacts from bin/ (run `make build` first) into dist/:
# vigil-agent and vigil-server .deb and .rpm, the offline bundle
# vigil-agent-<version>-linux-amd64.tar.gz, SHA256SUMS and, with a release
# key, SHA256SUMS.sig. `make package` runs this.
#
# Environment (all optional):
#   VIGIL_VERSION       package version (default: from `git describe`)
#   VIGIL_TRUST_POLICY  trust.json of the model-signing release keys (default:
#                       models/baseline/trust.json, else bin/trust.json; with
#                       none, the agent package ships no trust policy)
#   VIGIL_SIGN_KEY      ECDSA release key (unencrypted PEM) to sign SHA256SUMS
#   BIN, DIST           input and output directories (default bin, dist)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
DIST=${DIST:-dist}
args=(--bin "$BIN" --out "$DIST" --repo .)
[ -n "${VIGIL_VERSION:-}" ] && args+=(--version "$VIGIL_VERSION")
trust=${VIGIL_TRUST_POLICY:-}
if [ -z "$trust" ]; then
  for f in models/baseline/trust.json "$BIN/trust.json"; do
    if [ -f "$f" ]; then trust=$f; break; fi
  done
fi
if [ -n "$trust" ]; then
  args+=(--trust "$trust")
else
  echo "package.sh: no trust policy found (set VIGIL_TRUST_POLICY): building without one" >&2
  args+=(--no-trust-policy)
fi
[ -n "${VIGIL_SIGN_KEY:-}" ] && args+=(--sign-key "$VIGIL_SIGN_KEY")
exec go run ./installer/cmd/vigil-package "${args[@]}"
