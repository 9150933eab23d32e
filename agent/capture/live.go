package capture

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/bpf"
)

// LiveOptions configures live capture.
type LiveOptions struct {
	// Filter is a tcpdump-style expression ("tcp or udp port 53"). It is
	// compiled by running `tcpdump -y EN10MB -ddd EXPR` (the pure-Go
	// afpacket path has no expression compiler; gopacket's pcap package
	// needs cgo and libpcap), so it requires tcpdump in PATH. Without tcpdump
	// pass a compiled program in FilterProgram instead.
	Filter string
	// FilterProgram is a classic BPF program (e.g. the output of
	// `tcpdump -ddd`, see ParseBPF). It wins over Filter.
	FilterProgram []bpf.RawInstruction
	// Fanout is the number of AF_PACKET sockets sharing the interface's
	// traffic by flow hash (PACKET_FANOUT_HASH). 0 or 1: one socket.
	Fanout int
	// FanoutID is the fanout group id (default: derived from the process id).
	FanoutID uint16
	// RingBytes is the TPACKET_V3 ring size per socket. Default 64 MiB.
	RingBytes int
	// Promiscuous puts the interface in promiscuous mode.
	Promiscuous bool
	// BatchSize is the number of records a reader collects before handing a
	// batch over (default 256); partial batches are handed over after
	// FlushInterval (default 50 ms) without traffic.
	BatchSize     int
	FlushInterval time.Duration
	// Logger receives warnings (nil: discard).
	Logger *slog.Logger
}

// DefaultRingBytes is the default ring size per socket: 64 MiB avoided
// drops at 160-210k packets per second on the reference machine.
const DefaultRingBytes = 64 << 20

// CompileFilter compiles a tcpdump-style expression for Ethernet frames with
// `tcpdump -ddd`. It needs tcpdump in PATH and fails clearly without it.
func CompileFilter(ctx context.Context, expr string) ([]bpf.RawInstruction, error) {
	path, err := exec.LookPath("tcpdump")
	if err != nil {
		return nil, fmt.Errorf("compile filter %q: tcpdump not found (install it or pass a compiled program): %w", expr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "-y", "EN10MB", "-ddd", expr)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("compile filter %q: tcpdump: %s: %w", expr, strings.TrimSpace(stderr.String()), err)
	}
	prog, err := ParseBPF(stdout.String())
	if err != nil {
		return nil, fmt.Errorf("compile filter %q: %w", expr, err)
	}
	return prog, nil
}

// maxBPFInstructions is the kernel's limit for classic BPF (BPF_MAXINSNS).
const maxBPFInstructions = 4096

// ParseBPF parses the decimal program format that `tcpdump -ddd` prints:
// a count line, then one "code jt jf k" line per instruction.
func ParseBPF(text string) ([]bpf.RawInstruction, error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("parse bpf: instruction count: %w", err)
		}
		return nil, fmt.Errorf("parse bpf: empty program")
	}
	count, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
	if err != nil || count <= 0 || count > maxBPFInstructions {
		return nil, fmt.Errorf("parse bpf: bad instruction count %q", sc.Text())
	}
	prog := make([]bpf.RawInstruction, 0, count)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 {
			return nil, fmt.Errorf("parse bpf: instruction %d: %q: want 4 fields", len(prog), line)
		}
		var v [4]uint64
		for i, bits := range [4]int{16, 8, 8, 32} {
			if v[i], err = strconv.ParseUint(f[i], 10, bits); err != nil {
				return nil, fmt.Errorf("parse bpf: instruction %d: %q: %w", len(prog), line, err)
			}
		}
		if len(prog) == count {
			return nil, fmt.Errorf("parse bpf: more than %d instructions", count)
		}
		prog = append(prog, bpf.RawInstruction{Op: uint16(v[0]), Jt: uint8(v[1]), Jf: uint8(v[2]), K: uint32(v[3])})
	}
	if err := sc.Err(); err != nil {
		// A line longer than the scanner's buffer ended the loop: what
		// follows it must not be ignored.
		return nil, fmt.Errorf("parse bpf: after instruction %d: %w", len(prog), err)
	}
	if len(prog) != count {
		return nil, fmt.Errorf("parse bpf: %d instructions, header says %d", len(prog), count)
	}
	if _, allDecoded := bpf.Disassemble(prog); !allDecoded {
		return nil, fmt.Errorf("parse bpf: program holds invalid instructions")
	}
	return prog, nil
}
