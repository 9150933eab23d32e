package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/vigil-edge/vigil/agent/capture"
	"github.com/vigil-edge/vigil/models/features/netflow"
	"github.com/vigil-edge/vigil/models/features/nethost"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/test/trafficgen"
)

// refFrame is one Ethernet frame of the reference capture's source.
type refFrame struct {
	gapNs int64 // time since the previous frame of its file (capped)
	data  []byte
	wire  int
}

// readEthernetFrames reads every Ethernet pcap/pcapng file under dir.
func readEthernetFrames(dir string) ([]refFrame, int, error) {
	var files []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	var out []refFrame
	used := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var next func() ([]byte, int64, int, error)
		if r, err := pcapgo.NewReader(bytes.NewReader(b)); err == nil {
			if r.LinkType() != layers.LinkTypeEthernet {
				continue
			}
			next = func() ([]byte, int64, int, error) {
				d, ci, err := r.ReadPacketData()
				return d, ci.Timestamp.UnixNano(), ci.Length, err
			}
		} else if r, err := pcapgo.NewNgReader(bytes.NewReader(b), pcapgo.DefaultNgReaderOptions); err == nil {
			if r.LinkType() != layers.LinkTypeEthernet {
				continue
			}
			next = func() ([]byte, int64, int, error) {
				d, ci, err := r.ReadPacketData()
				return d, ci.Timestamp.UnixNano(), ci.Length, err
			}
		} else {
			continue
		}
		var prev int64
		n := 0
		for {
			d, ts, wire, err := next()
			if err != nil {
				break
			}
			gap := int64(0)
			if n > 0 {
				gap = min(max(ts-prev, 0), int64(time.Second))
			}
			prev = ts
			out = append(out, refFrame{gapNs: gap, data: append([]byte(nil), d...), wire: wire})
			n++
		}
		if n > 0 {
			used++
		}
	}
	if len(out) == 0 {
		return nil, 0, errors.New("no Ethernet frames")
	}
	return out, used, nil
}

// shiftIPv4 adds k to the second octet of both IPv4 addresses of an
// Ethernet frame (untagged or one 802.1Q tag) and fixes the header checksum.
func shiftIPv4(f []byte, k int) {
	off := 12
	if len(f) >= 18 && binary.BigEndian.Uint16(f[12:]) == 0x8100 {
		off = 16
	}
	if len(f) < off+2 || binary.BigEndian.Uint16(f[off:]) != 0x0800 {
		return
	}
	ip := f[off+2:]
	if len(ip) < 20 || ip[0]>>4 != 4 {
		return
	}
	ihl := int(ip[0]&15) * 4
	if ihl < 20 || len(ip) < ihl {
		return
	}
	ip[13] += byte(k)
	ip[17] += byte(k)
	ip[10], ip[11] = 0, 0
	var sum uint32
	for i := 0; i < ihl; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
}

// BuildReferenceCapture writes the benchmark's reference capture of about
// target packets: the Ethernet captures of benignDir concatenated, pass
// after pass, with monotonic timestamps and IPv4 addresses shifted on each
// pass (so repeats make new flows); or, when benignDir is absent, a
// trafficgen capture. It returns a description of the source.
func BuildReferenceCapture(path, benignDir string, target int) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("create reference capture: %w", err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	frames, files, ferr := readEthernetFrames(benignDir)
	if ferr != nil {
		sessions := target / 9
		if _, err := trafficgen.Write(bw, trafficgen.Config{Seed: 11, Sessions: sessions, Duration: time.Duration(sessions) * 20 * time.Millisecond}); err != nil {
			return "", fmt.Errorf("generate reference capture: %w", err)
		}
		return fmt.Sprintf("trafficgen, %d sessions (%s absent: %v)", sessions, benignDir, ferr), bw.Flush()
	}
	w := pcapgo.NewWriterNanos(bw)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return "", fmt.Errorf("write reference capture: %w", err)
	}
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	buf := make([]byte, 0, 65536)
	n, pass := 0, 0
	for n < target {
		for _, fr := range frames {
			if n >= target {
				break
			}
			ts += max(fr.gapNs, 1000)
			buf = append(buf[:0], fr.data...)
			shiftIPv4(buf, pass)
			ci := gopacketCI(ts, len(buf), max(fr.wire, len(buf)))
			if err := w.WritePacket(ci, buf); err != nil {
				return "", fmt.Errorf("write reference capture: %w", err)
			}
			n++
		}
		pass++
	}
	return fmt.Sprintf("%d Ethernet captures of %s (%d frames) concatenated %d times, IPv4 second octet +pass, monotonic timestamps", files, benignDir, len(frames), pass), bw.Flush()
}

// refCapture returns the reference capture, building it once into
// .cache/bench/ of the repository.
func refCapture(tb testing.TB) (string, string) {
	tb.Helper()
	target := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("VIGIL_BENCH_PACKETS")); err == nil && v > 0 {
		target = v
	}
	return cachedCapture(tb, fmt.Sprintf("netflow-ref-%d.pcap", target), func(path string) (string, error) {
		data := os.Getenv("VIGIL_SHARED_DATA")
		if data == "" {
			data = filepath.Join(nfRepoRoot(tb), "..", "shared", "data")
		}
		return BuildReferenceCapture(path, filepath.Join(data, "benign"), target)
	})
}

// portScanCapture returns a port-scan capture of about as many packets as
// the reference capture, built once into .cache/bench/: a trafficgen SYN
// scan of 60,000 ports hidden in 20,000 benign sessions (about half of the
// packets are the scan's), repeated with shifted IPv4 addresses (a new
// scanner and target on each pass) as BuildReferenceCapture does.
func portScanCapture(tb testing.TB, target int) (string, string) {
	tb.Helper()
	return cachedCapture(tb, fmt.Sprintf("netflow-portscan-%d.pcap", target), func(path string) (string, error) {
		src := filepath.Join(tb.TempDir(), "scan.pcap")
		f, err := os.Create(src)
		if err != nil {
			return "", err
		}
		bw := bufio.NewWriterSize(f, 1<<20)
		info, err := trafficgen.Write(bw, trafficgen.Config{Seed: 1, Scan: true, ScanPorts: 60000, Sessions: 20000, Duration: 2 * time.Minute})
		if err == nil {
			err = bw.Flush()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", err
		}
		d, err := BuildReferenceCapture(path, filepath.Dir(src), target)
		return fmt.Sprintf("trafficgen SYN scan of 60000 ports in 20000 benign sessions (%d packets, %d of the scan), as %s",
			info.Packets, info.ScanPackets, d), err
	})
}

// cachedCapture returns .cache/bench/NAME of the repository and its
// description (NAME.txt), building both with build the first time.
func cachedCapture(tb testing.TB, name string, build func(path string) (string, error)) (string, string) {
	tb.Helper()
	dir := filepath.Join(nfRepoRoot(tb), ".cache", "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, name)
	desc := path + ".txt"
	if b, err := os.ReadFile(desc); err == nil {
		if _, err := os.Stat(path); err == nil {
			return path, string(b)
		}
	}
	d, err := build(path)
	if err != nil {
		tb.Fatalf("build %s: %v", name, err)
	}
	_ = os.WriteFile(desc, []byte(d), 0o644)
	return path, d
}

// cpuOf runs a command and returns its user+system CPU time (including
// the children it waited for, e.g. the plugin) and its wall time.
func cpuOf(cmd *exec.Cmd, sample func(pid int)) (cpu, wall time.Duration, err error) {
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	if sample != nil {
		go func() {
			defer close(done)
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					sample(cmd.Process.Pid)
				}
			}
		}()
	} else {
		close(done)
	}
	err = cmd.Wait()
	close(stop)
	<-done
	wall = time.Since(start)
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, wall, err
	}
	cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return cpu, wall, err
}

// rssTree is the summed VmRSS (bytes) of pid and its direct children, and
// their summed PSS (proportional set size: a page shared by n processes
// counts 1/n, so the ring both map counts once, not twice).
func rssTree(pid int) (rss, pss uint64) {
	pids := []int{pid}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, c := range strings.Fields(string(b)) {
			if cp, err := strconv.Atoi(c); err == nil {
				pids = append(pids, cp)
			}
		}
	}
	for _, p := range pids {
		rss += rssOf(p)
		pss += kbField(fmt.Sprintf("/proc/%d/smaps_rollup", p), "Pss:")
	}
	return rss, pss
}

// kbField reads a "Name:  N kB" line of a /proc file, in bytes (0 if absent).
func kbField(path, name string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func rssOf(pid int) uint64 {
	return kbField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
}

// Feature sets decodeFeatures computes.
const (
	featNone    = iota // decode only
	featNethost        // nethost/v7, the set of the shipped model (the plugin computes only the loaded models' sets)
	featBoth           // netflow/v1 (Kitsune, 115 features) and nethost/v7
	featNetflow        // netflow/v1 alone
)

// decodeFeatures runs the capture's decode and the chosen feature sets in
// this process and returns packets and the goroutine's CPU time.
func decodeFeatures(tb testing.TB, path string, features int) (int, time.Duration) {
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_THREAD, &ru0)
	src, err := capture.OpenFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	nf := netflow.New(netflow.Config{})
	nh := nethost.New(nethost.Config{V7: true})
	var b [nethost.DimV7]float32
	buf := make([]event.Packet, 1024)
	var feats []float32
	if features == featNetflow || features == featBoth {
		feats = make([]float32, len(buf)*netflow.Dim)
	}
	n := 0
	for {
		k, err := src.Next(context.Background(), buf)
		switch features {
		case featNethost:
			for i := range buf[:k] {
				nh.Extract(&buf[i], b[:])
			}
		case featBoth:
			// netflow/v1 in its batch form, as the plugin can call it (its
			// feature rows are contiguous, as feats is here).
			nf.ExtractBatch(buf[:k], feats[:k*netflow.Dim])
			for i := range buf[:k] {
				nh.Extract(&buf[i], b[:])
			}
		case featNetflow:
			nf.ExtractBatch(buf[:k], feats[:k*netflow.Dim])
		}
		n += k
		if err != nil {
			if !errors.Is(err, io.EOF) {
				tb.Fatal(err)
			}
			break
		}
	}
	_ = syscall.Getrusage(syscall.RUSAGE_THREAD, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano())
	return n, cpu
}

// TestNetflowBenchReport measures scan throughput on the reference capture
// (packets per CPU-second, agent and plugin together), side by side with
// ndpiReader and tcpdump, decode + features alone, the IPC share and the
// RSS of agent + plugin, and prints a Markdown table for
// docs/benchmarks.md. It runs when VIGIL_BENCH=1 (test/e2e/netflow_bench.sh,
// `make bench`).
func TestNetflowBenchReport(t *testing.T) {
	if os.Getenv("VIGIL_BENCH") != "1" {
		t.Skip("benchmark report: set VIGIL_BENCH=1 (test/e2e/netflow_bench.sh)")
	}
	in := netflowInstall(t)
	path, desc := refCapture(t)
	// Rounds: every measurement once per round, the best of the rounds
	// kept. Interleaving keeps the peers and our rows under the same
	// conditions when the machine's load changes during the report (a
	// shared VM: a figure measured a minute after its peer can move by a
	// third), and the best of several rounds approaches the quiet machine.
	// Single rounds of one row vary by ±40% on the shared VM measured, so
	// the paired medians need about 15 rounds (about 2 minutes) to settle.
	runs := 15
	if v, err := strconv.Atoi(os.Getenv("VIGIL_BENCH_ROUNDS")); err == nil && v > 0 {
		runs = v
	}
	type best struct {
		n         int
		cpu, wall time.Duration
	}
	keep := func(b *best, n int, cpu, wall time.Duration) {
		if b.cpu == 0 || cpu < b.cpu {
			*b = best{n: n, cpu: cpu, wall: wall}
		}
	}
	var packets uint64
	var rss, pss uint64
	scan := func() (time.Duration, time.Duration, error) {
		cmd := exec.Command(in.Agent, "scan", "--json", "--pcap", path)
		var out bytes.Buffer
		cmd.Stdout = &out
		c, w, err := cpuOf(cmd, func(pid int) {
			r, p := rssTree(pid)
			rss, pss = max(rss, r), max(pss, p)
		})
		if err == nil {
			var res scanResult
			if jerr := jsonUnmarshal(out.Bytes(), &res); jerr != nil {
				return 0, 0, jerr
			}
			packets = res.Summary.Packets
			if res.Summary.EventsLost != 0 {
				t.Errorf("scan lost %d packets", res.Summary.EventsLost)
			}
		}
		return c, w, err
	}
	// The same command on a port-scan capture of the same size (issue 3:
	// the same rate during a port scan as on benign traffic).
	psPath, psDesc := "", ""
	var psPackets, psAnomalies uint64
	psScan := func() (time.Duration, time.Duration, error) {
		cmd := exec.Command(in.Agent, "scan", "--json", "--pcap", psPath)
		var out bytes.Buffer
		cmd.Stdout = &out
		c, w, err := cpuOf(cmd, nil)
		if err == nil {
			var res scanResult
			if jerr := jsonUnmarshal(out.Bytes(), &res); jerr != nil {
				return 0, 0, jerr
			}
			psPackets, psAnomalies = res.Summary.Packets, res.Summary.Anomalies
		}
		return c, w, err
	}
	type peer struct {
		name    string
		cmd     func() *exec.Cmd
		b       best
		skipped string
	}
	var peers []*peer
	if _, err := exec.LookPath("ndpiReader"); err == nil {
		peers = append(peers, &peer{name: "ndpiReader -i FILE -q", cmd: func() *exec.Cmd {
			cmd := exec.Command("ndpiReader", "-i", path, "-q")
			cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
			return cmd
		}})
	} else {
		peers = append(peers, &peer{name: "ndpiReader -i FILE -q", skipped: "not installed (apt-get install libndpi-bin)"})
	}
	if _, err := exec.LookPath("tcpdump"); err == nil {
		peers = append(peers, &peer{name: "TZ=UTC tcpdump -nr FILE", cmd: func() *exec.Cmd {
			cmd := exec.Command("tcpdump", "-nr", path)
			cmd.Env = append(os.Environ(), "TZ=UTC")
			cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
			return cmd
		}})
	}
	var scanB, psB, decB, hostB, featB, nfB best
	// Paired ratios: in each round the scan, ndpiReader and the netflow/v1
	// row run back to back, and their ratios in that round are kept. The
	// load of a shared VM drifts over seconds, so two figures taken a few
	// seconds apart share it, while the best of each row over all rounds
	// may come from different phases.
	var scanVsNdpi, nfVsNdpi, psVsScan []float64
	// A first scan, not counted: it learns the capture's packet count for
	// the port-scan capture and brings the files into the page cache.
	if _, _, err := scan(); err != nil {
		t.Fatal(err)
	}
	psPath, psDesc = portScanCapture(t, int(packets))
	for range runs {
		// The port-scan scan runs right before the benign one, for their
		// ratio in this round.
		psC, psW, err := psScan()
		if err != nil {
			t.Fatal(err)
		}
		keep(&psB, int(psPackets), psC, psW)
		c, w, err := scan()
		if err != nil {
			t.Fatal(err)
		}
		keep(&scanB, int(packets), c, w)
		scanC := c
		psVsScan = append(psVsScan, float64(psPackets)/psC.Seconds()/(float64(packets)/scanC.Seconds()))
		var ndpiC time.Duration
		for _, p := range peers {
			if p.skipped != "" || !strings.HasPrefix(p.name, "ndpiReader") {
				continue
			}
			c, w, err := cpuOf(p.cmd(), nil)
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			keep(&p.b, int(packets), c, w)
			ndpiC = c
		}
		n, nfC := decodeFeatures(t, path, featNetflow)
		keep(&nfB, n, nfC, 0)
		if ndpiC > 0 {
			scanVsNdpi = append(scanVsNdpi, ndpiC.Seconds()/scanC.Seconds())
			nfVsNdpi = append(nfVsNdpi, float64(n)/nfC.Seconds()/(float64(packets)/ndpiC.Seconds()))
		}
		for _, p := range peers {
			if p.skipped != "" || strings.HasPrefix(p.name, "ndpiReader") {
				continue
			}
			c, w, err := cpuOf(p.cmd(), nil)
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			keep(&p.b, int(packets), c, w)
		}
		for _, m := range []struct {
			b *best
			f int
		}{{&decB, featNone}, {&hostB, featNethost}, {&featB, featBoth}} {
			n, c := decodeFeatures(t, path, m.f)
			keep(m.b, n, c, 0)
		}
	}
	scanCPU, scanWall := scanB.cpu, scanB.wall
	psCPU, psWall := psB.cpu, psB.wall
	rate := func(cpu time.Duration) float64 { return float64(packets) / cpu.Seconds() }
	decN, decCPU := decB.n, decB.cpu
	hostN, hostCPU := hostB.n, hostB.cpu
	featN, featCPU := featB.n, featB.cpu
	nfN, nfCPU := nfB.n, nfB.cpu
	// IPC: the same packets through the ring into the example plugin's
	// no-op detector, minus decoding alone.
	ipcLine := "not measured (no vigil-detector-example)"
	if ex := exampleBinary(t, in); ex != "" {
		var ipcB best
		for range runs {
			c, w, err := ringNoopCPU(t, ex, path)
			if err != nil {
				t.Fatal(err)
			}
			keep(&ipcB, 0, c, w)
		}
		ipcCPU := ipcB.cpu
		share := (ipcCPU - decCPU).Seconds() / scanCPU.Seconds()
		ipcLine = fmt.Sprintf("%.0f ns per packet (agent push + plugin ring read, no-op detector, decode subtracted): %.1f%% of the end-to-end CPU", float64((ipcCPU-decCPU).Nanoseconds())/float64(packets), share*100)
	}
	host, _ := os.Hostname()
	cpuModel := cpuName()
	var b strings.Builder
	fmt.Fprintf(&b, "Date %s, host %s, %s, %d CPUs (shared with other jobs), Go %s.\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), host, cpuModel, goruntime.NumCPU(), goruntime.Version())
	fmt.Fprintf(&b, "Reference capture: %d packets, %s. Best of %d interleaved rounds (each round runs every row once); CPU = user + system of the process and the children it waited for.\n\n", packets, desc, runs)
	fmt.Fprintf(&b, "| what | command | packets / CPU-second | ratio to scan |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| scan end to end (read, decode, features, ring IPC, int8 ONNX scoring of the installed models: %s, aggregation) | `vigil-agent scan --json --pcap FILE` | %.0f (wall %.2f s) | 1.00 |\n", modelNames(in), rate(scanCPU), scanWall.Seconds())
	psRate := float64(psPackets) / psCPU.Seconds()
	fmt.Fprintf(&b, "| scan end to end during a port scan (%d packets, %d of them anomalous; %s) | same, on that file | %.0f (wall %.2f s) | %.2fx the benign rate |\n",
		psPackets, psAnomalies, psDesc, psRate, psWall.Seconds(), psRate/rate(scanCPU))
	for _, p := range peers {
		if p.skipped != "" {
			fmt.Fprintf(&b, "| peer | `%s` | %s | |\n", p.name, p.skipped)
			continue
		}
		fmt.Fprintf(&b, "| peer | `%s` | %.0f | scan runs at %.2fx its rate |\n", p.name, rate(p.b.cpu), p.b.cpu.Seconds()/scanCPU.Seconds())
	}
	// In-process rows: their ratio to ndpiReader's rate (issue 3 asks
	// decode + features for at least 2x).
	vsNdpi := func(r float64) string {
		for _, p := range peers {
			if strings.HasPrefix(p.name, "ndpiReader") && p.skipped == "" && p.b.cpu > 0 {
				return fmt.Sprintf("%.2fx ndpiReader", r/rate(p.b.cpu))
			}
		}
		return ""
	}
	for _, row := range []struct {
		what, cmd string
		n         int
		cpu       time.Duration
	}{
		{"read + decode only (in process)", "capture.OpenFile + Decoder", decN, decCPU},
		{"read + decode + nethost/v7 features, the shipped model's set (in process)", "", hostN, hostCPU},
		{"read + decode + netflow/v1 features, Kitsune's 115 (in process, ExtractBatch as the plugin)", "", nfN, nfCPU},
		{"read + decode + netflow/v1 + nethost/v7 features (in process)", "", featN, featCPU},
	} {
		r := float64(row.n) / row.cpu.Seconds()
		fmt.Fprintf(&b, "| %s | %s | %.0f | %s |\n", row.what, row.cmd, r, vsNdpi(r))
	}
	if len(nfVsNdpi) > 0 {
		fmt.Fprintf(&b, "\nPaired with ndpiReader (run back to back in each round; median, min-max over %d rounds): scan %s, netflow/v1 decode + features %s.\n",
			len(nfVsNdpi), medianRange(scanVsNdpi), medianRange(nfVsNdpi))
	}
	if len(nfVsNdpi) > 0 {
		fmt.Fprintf(&b, "netflow/v1 decode + features against ndpiReader, every round (sorted): %s.\n", ratioList(nfVsNdpi))
	}
	if len(psVsScan) > 0 {
		fmt.Fprintf(&b, "Port scan against benign, paired (the two scans back to back in each round): %s the benign rate.\n", medianRange(psVsScan))
	}
	fmt.Fprintf(&b, "\nIPC: %s.\nPeak RSS of agent + plugin during the scan: %.1f MB (summed VmRSS; summed PSS, which counts the shared ring and libraries once: %.1f MB).\n", ipcLine, float64(rss)/1e6, float64(pss)/1e6)
	t.Log("\n" + b.String())
	if out := os.Getenv("VIGIL_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// medianRange formats the median and the range of ratios, as "1.23x
// (1.10-1.40x)".
func medianRange(r []float64) string {
	s := slices.Clone(r)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf("%.2fx (%.2f-%.2fx)", m, s[0], s[len(s)-1])
}

// ratioList formats ratios sorted, as "1.80 1.95 2.10".
func ratioList(r []float64) string {
	s := slices.Clone(r)
	slices.Sort(s)
	f := make([]string, len(s))
	for i, v := range s {
		f[i] = fmt.Sprintf("%.2f", v)
	}
	return strings.Join(f, " ")
}

func modelNames(in *nfInstall) string {
	var s []string
	for _, b := range in.Bundles {
		s = append(s, b.FeatureSet)
	}
	return strings.Join(s, " + ")
}

func cpuName() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}

// BenchmarkNetflowDecodeFeatures: read + decode + both feature sets, per
// packet, on the reference capture (VIGIL_BENCH_PACKETS bounds its size).
func BenchmarkNetflowDecodeFeatures(b *testing.B) { benchDecode(b, featBoth) }

// BenchmarkNetflowDecodeNetflow: read + decode + netflow/v1 alone, per
// packet, on the reference capture (the "decode + features" goal for
// the Kitsune set: at least 2x ndpiReader's packets per CPU-second).
func BenchmarkNetflowDecodeNetflow(b *testing.B) { benchDecode(b, featNetflow) }

// benchDecode reports decodeFeatures' packets per CPU-second.
func benchDecode(b *testing.B, features int) {
	if os.Getenv("VIGIL_SHARED_DATA") == "" && os.Getenv("VIGIL_BENCH") != "1" {
		b.Skip("set VIGIL_BENCH=1 or VIGIL_SHARED_DATA")
	}
	path, _ := refCapture(b)
	b.ResetTimer()
	var total int
	var cpu time.Duration
	for b.Loop() {
		n, c := decodeFeatures(b, path, features)
		total += n
		cpu += c
	}
	b.ReportMetric(float64(total)/cpu.Seconds(), "packets/CPU-s")
}
