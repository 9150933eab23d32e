package capture

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
)

// formatBPF is the `tcpdump -ddd` text of prog, as ParseBPF reads it.
func formatBPF(prog []bpf.RawInstruction) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", len(prog))
	for _, ins := range prog {
		fmt.Fprintf(&b, "%d %d %d %d\n", ins.Op, ins.Jt, ins.Jf, ins.K)
	}
	return b.String()
}

// FuzzParseBPF: ParseBPF reads a filter program the operator (or a
// configuration management tool) supplies with --bpf-file. It never
// panics; a program it accepts has 1 to 4096 instructions that all
// disassemble, and reads back the same from its own canonical text.
func FuzzParseBPF(f *testing.F) {
	for _, s := range []string{
		"4\n40 0 0 12\n21 0 1 2048\n6 0 0 262144\n6 0 0 0\n", // tcpdump -ddd ip
		"1\n6 0 0 262144\n",
		"1\r\n6 0 0 262144\r\n",
		"  2 \n\n 6 0 0 1 \n\t6 0 0 0\n",
		"",
		"0\n",
		"4097\n",
		"1\n6 0 0 4294967296\n",
		"1\n65535 255 255 4294967295\n",
		"1\n6 0 0\n",
		"2\n6 0 0 1\n",
		"1\n6 0 0 1\n6 0 0 2\n",
		"-1\n",
		"1\n+6 0 0 1\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		prog, err := ParseBPF(text)
		if err != nil {
			if prog != nil {
				t.Fatalf("error %v with a program", err)
			}
			return
		}
		if len(prog) == 0 || len(prog) > maxBPFInstructions {
			t.Fatalf("accepted %d instructions", len(prog))
		}
		if _, all := bpf.Disassemble(prog); !all {
			t.Fatal("accepted instructions that do not disassemble")
		}
		again, err := ParseBPF(formatBPF(prog))
		if err != nil || !slices.Equal(again, prog) {
			t.Fatalf("canonical text reads back as %v, %v", again, err)
		}
	})
}

// TestParseBPFLongLine: a line longer than bufio.Scanner's 64 KiB buffer
// ended the scan without an error, so a program whose instructions were
// all read was accepted with whatever followed silently ignored.
func TestParseBPFLongLine(t *testing.T) {
	for _, text := range []string{
		"1\n6 0 0 262144\n" + strings.Repeat(" ", 70000) + "6 0 0 0\n",
		"1\n6 0 0 262144\n6" + strings.Repeat("0", 70000) + " 0 0 0\n",
		strings.Repeat("1", 70000) + "\n6 0 0 0\n",
	} {
		if prog, err := ParseBPF(text); err == nil {
			t.Errorf("ParseBPF(%.20q...) = %v, want an error", text, prog)
		}
	}
}
