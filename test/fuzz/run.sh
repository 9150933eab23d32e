#!/usr/bin/env bash
# Runs every Go fuzz target of the module (or of the packages given as
# arguments) for FUZZTIME each (default 10s), one after another, and stops
# at the first failure. Go runs one fuzz target per `go test` call, so the
# targets are listed with `go test -list` first. New failing inputs land in
# the package's testdata/fuzz/FuzzXxx/, where the normal tests replay them.
set -euo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
pkgs=("$@")
[ ${#pkgs[@]} -eq 0 ] && pkgs=(./...)
n=0
flaky=0
for pkg in $("$GO" list "${pkgs[@]}"); do
	targets=$("$GO" test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
	for t in $targets; do
		n=$((n + 1))
		echo "== $pkg $t ($FUZZTIME)"
		log=$(mktemp)
		if "$GO" test -run '^$' -fuzz "^${t}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1 | tee "$log" | grep -v '^fuzz: elapsed: .*execs:'; [ "${PIPESTATUS[0]}" -eq 0 ]; then
			rm -f "$log"
			continue
		fi
		# Go 1.26's fuzz coordinator can report its own stop at the end of
		# -fuzztime as "context deadline exceeded" (go.dev/issue/75804, fixed
		# in Go 1.27). Such a run wrote no failing input: it is no finding.
		if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
			echo "   $t: stopped by go.dev/issue/75804 at the end of -fuzztime, no failing input: not a failure"
			flaky=$((flaky + 1))
			rm -f "$log"
			continue
		fi
		rm -f "$log"
		exit 1
	done
done
echo "fuzzed $n targets for $FUZZTIME each ($flaky stopped by go.dev/issue/75804)"
[ "$n" -gt 0 ] || { echo "no fuzz targets found" >&2; exit 1; }
