#!/bin/bash
# record-live-phase.sh OUT.pcap [PINGS]: records one benign phase of TestNetflowLive (test/e2e), for
# replaying with `vigil-agent scan --pcap OUT.pcap --min-severity low` (docs/models.md, section 18).
#
# A namespace of its own with a veth (10.99.78.1 here, 10.99.78.2 there), the test's own HTTP and DNS
# helper (TestNetflowLiveHelper of a test binary built with `go test -c -o /tmp/e2e.test ./test/e2e`;
# E2E_TEST overrides the path), PINGS echo requests first (default 1, as the test's capture probe
# sends), then 20 s of curl downloads and dig lookups with the test's sizes, names and pauses, captured
# with tcpdump (snaplen 256). Needs root, ip, tcpdump, curl, dig, ping. Everything is removed on exit,
# and what a killed recording left is removed first.
set -u
out=${1:?usage: record-live-phase.sh OUT.pcap [PINGS]}
pings=${2:-1}
e2e=${E2E_TEST:-/tmp/e2e.test}
ns=vgrec$$ h=vgrh$$ p=vgrp$$ hp='' tp=''
cleanup() {
	[ -n "$tp" ] && kill "$tp" 2>/dev/null
	[ -n "$hp" ] && kill "$hp" 2>/dev/null
	wait 2>/dev/null
	ip netns del "$ns" 2>/dev/null
	ip link del "$h" 2>/dev/null
	rm -f "/tmp/record-live-helper.$$"
}
trap cleanup EXIT
# What a recording that was killed (no EXIT trap) left: its root end holds 10.99.78.1 too and would
# take the traffic to 10.99.78.2.
for l in $(ip -o link show | sed -n 's/^[0-9]*: \(vgrh[0-9][0-9]*\)[@:].*/\1/p'); do
	if [ "${l#vgrh}" = $$ ] || ! kill -0 "${l#vgrh}" 2>/dev/null; then ip link del "$l"; fi
done
for d in /run/netns/vgrec[0-9]*; do
	n=${d##*/} pid=${d##*/vgrec}
	[[ $pid =~ ^[0-9]+$ ]] || continue # also the unmatched glob
	[ "$pid" != $$ ] && kill -0 "$pid" 2>/dev/null && continue
	for q in $(ip netns pids "$n"); do kill -9 "$q" 2>/dev/null; done
	ip netns del "$n"
done
set -e
ip netns add "$ns"
ip link add "$h" type veth peer name "$p"
ip link set "$p" netns "$ns"
ip addr add 10.99.78.1/24 dev "$h"
ip link set dev "$h" gso_max_segs 1 gso_max_size 1500 # wire-sized frames, as the test sets
ip link set "$h" up
ip netns exec "$ns" ip addr add 10.99.78.2/24 dev "$p"
ip netns exec "$ns" ip link set dev "$p" gso_max_segs 1 gso_max_size 1500
ip netns exec "$ns" ip link set "$p" up
ip netns exec "$ns" ip link set lo up
set +e
VIGIL_NF_LIVE_HELPER=1 ip netns exec "$ns" "$e2e" -test.run='^TestNetflowLiveHelper$' >"/tmp/record-live-helper.$$" 2>&1 &
hp=$!
for _ in $(seq 50); do grep -q 'HELPER READY' "/tmp/record-live-helper.$$" && break; sleep 0.2; done
grep -q 'HELPER READY' "/tmp/record-live-helper.$$" || { echo "helper did not start: $e2e" >&2; exit 1; }
tcpdump -i "$h" -w "$out" -s 256 -U 2>/dev/null &
tp=$!
sleep 1
for _ in $(seq "$pings"); do ping -c1 -W1 10.99.78.2 >/dev/null; sleep 0.2; done
sizes=(2000 40000 300000 1000000 15000)
names=(www.example.org mail.example.org updates.example.net api.example.com)
end=$((SECONDS + 20))
i=0
while [ $SECONDS -lt $end ] && [ $i -lt 1000 ]; do
	# -q: no ~/.curlrc; --noproxy: a proxy in the environment would take the request off the veth.
	curl -q --noproxy '*' -s -f -m 10 -o /dev/null "http://10.99.78.2:8080/file?size=${sizes[$((i % 5))]}"
	n=${names[$((i % 4))]}
	dig +time=3 +tries=1 @10.99.78.2 "$n" A >/dev/null &
	dp=$!
	dig +time=3 +tries=1 @10.99.78.2 "$n" AAAA >/dev/null
	wait "$dp"
	sleep "0.$((2 + i % 5))"
	i=$((i + 1))
done
sleep 1
echo "$out: $i downloads"
