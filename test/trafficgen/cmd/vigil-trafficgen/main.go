// Command vigil-trafficgen writes a synthetic capture (benign sessions,
// optionally with a port scan inside) for the demo, tests and benchmarks.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/vigil-edge/vigil/test/trafficgen"
)

func main() {
	out := flag.String("out", "demo.pcap", "output pcap file")
	seed := flag.Uint64("seed", 1, "random seed")
	sessions := flag.Int("sessions", 400, "benign sessions")
	dur := flag.Duration("duration", 60*time.Second, "span of the benign traffic")
	scan := flag.Bool("scan", true, "add a SYN port scan")
	ports := flag.Int("scan-ports", 1000, "ports scanned")
	flag.Parse()
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	info, err := trafficgen.Write(f, trafficgen.Config{Seed: *seed, Sessions: *sessions, Duration: *dur, Scan: *scan, ScanPorts: *ports})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s: %d packets (%d scan packets from %s)\n", *out, info.Packets, info.ScanPackets, info.Scanner)
}
