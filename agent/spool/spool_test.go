package spool

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func finding(sev wirev1.Severity, summary string) *wirev1.Finding {
	return &wirev1.Finding{
		Detector:     "test",
		TimeUnixNano: time.Unix(1700000000, 0).UnixNano(),
		Count:        1,
		Severity:     sev,
		Score:        0.9,
		Threshold:    0.5,
		Context:      &wirev1.FindingContext{SrcIp: "10.0.0.1", DstIp: "10.0.0.2", SrcPort: 1234, DstPort: 80, Proto: "tcp"},
		Summary:      summary,
	}
}

func batch(n int, sev wirev1.Severity, tag string) []*wirev1.Finding {
	out := make([]*wirev1.Finding, n)
	for i := range out {
		out[i] = finding(sev, fmt.Sprintf("%s-%d", tag, i))
	}
	return out
}

func open(t testing.TB, path string, max int64) *Spool {
	t.Helper()
	s, err := Open(path, Options{MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// entrySize is what one finding costs in the byte accounting.
func entrySize(f *wirev1.Finding) int64 {
	c := proto.Clone(f).(*wirev1.Finding)
	return int64(proto.Size(c)) + entryOverhead
}

func seqs(fs []*wirev1.Finding) []uint64 {
	out := make([]uint64, len(fs))
	for i, f := range fs {
		out[i] = f.Seq
	}
	return out
}

func TestAppendPeekAck(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), 0)
	defer s.Close()

	if err := s.Append(ctx, batch(10, wirev1.Severity_SEVERITY_LOW, "a")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Peek(4, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{1, 2, 3, 4}; fmt.Sprint(seqs(got)) != fmt.Sprint(want) {
		t.Fatalf("peek seqs %v, want %v", seqs(got), want)
	}
	if got[0].Summary != "a-0" || got[3].Summary != "a-3" {
		t.Fatalf("peek content: %q %q", got[0].Summary, got[3].Summary)
	}
	// Peek does not consume.
	again, _ := s.Peek(1, 0)
	if again[0].Seq != 1 {
		t.Fatalf("second peek starts at %d", again[0].Seq)
	}
	// Byte bound: at least one, then stop before exceeding.
	one := int(proto.Size(got[0]))
	byBytes, _ := s.Peek(100, one*2+1)
	if len(byBytes) != 2 {
		t.Fatalf("peek by bytes got %d findings, want 2", len(byBytes))
	}
	tiny, _ := s.Peek(100, 1)
	if len(tiny) != 1 {
		t.Fatalf("peek with tiny byte bound got %d, want 1", len(tiny))
	}
	from, _ := s.PeekFrom(7, 100, 0)
	if fmt.Sprint(seqs(from)) != fmt.Sprint([]uint64{7, 8, 9, 10}) {
		t.Fatalf("PeekFrom(7) = %v", seqs(from))
	}

	if err := s.Ack(4); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Peek(100, 0)
	if len(got) != 6 || got[0].Seq != 5 {
		t.Fatalf("after ack(4): %v", seqs(got))
	}
	// Acks are cumulative and idempotent.
	if err := s.Ack(2); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Depth != 6 || st.AckedSeq != 4 || st.NextSeq != 11 {
		t.Fatalf("stats %+v", st)
	}
	// Acking the future is refused.
	if err := s.Ack(11); err == nil {
		t.Fatal("ack of unassigned seq accepted")
	}
	if err := s.Ack(10); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Depth != 0 || st.Bytes != 0 {
		t.Fatalf("stats after full ack %+v", st)
	}
	if got, _ := s.Peek(10, 0); len(got) != 0 {
		t.Fatalf("peek on empty: %v", seqs(got))
	}
}

func TestPersistenceAndSeqContinuity(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spool.db")
	s := open(t, path, 0)
	if err := s.Append(ctx, batch(5, wirev1.Severity_SEVERITY_HIGH, "x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(5); err != nil { // everything acked: seqs must still not be reused
		t.Fatal(err)
	}
	if err := s.Append(ctx, batch(3, wirev1.Severity_SEVERITY_MEDIUM, "y")); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, batch(1, 1, "z")); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}

	s = open(t, path, 0)
	defer s.Close()
	after := s.Stats()
	if !proto.Equal(before, after) {
		t.Fatalf("stats changed across reopen: %v -> %v", before, after)
	}
	got, _ := s.Peek(100, 0)
	if fmt.Sprint(seqs(got)) != fmt.Sprint([]uint64{6, 7, 8}) || got[2].Summary != "y-2" {
		t.Fatalf("after reopen: %v", seqs(got))
	}
	fs := batch(2, wirev1.Severity_SEVERITY_LOW, "w")
	if err := s.Append(ctx, fs); err != nil {
		t.Fatal(err)
	}
	if fs[0].Seq != 9 || fs[1].Seq != 10 {
		t.Fatalf("seqs after reopen %d %d, want 9 10", fs[0].Seq, fs[1].Seq)
	}
}

// TestKillLike closes the file without any ack (as a killed agent leaves it:
// every Append was committed) and checks that all findings survive.
func TestKillLike(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spool.db")
	s := open(t, path, 0)
	const n = 20
	for i := 0; i < n; i++ {
		if err := s.Append(ctx, batch(50, wirev1.Severity(1+i%4), fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Simulate a crash: drop the handle without a clean shutdown sequence
	// (bbolt has no shutdown work besides unlocking; commits are durable).
	_ = s.db.Close()

	s = open(t, path, 0)
	defer s.Close()
	got, err := s.Peek(n*50+10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n*50 {
		t.Fatalf("%d findings after crash, want %d", len(got), n*50)
	}
	for i, f := range got {
		if f.Seq != uint64(i+1) {
			t.Fatalf("finding %d has seq %d", i, f.Seq)
		}
	}
	if st := s.Stats(); st.Depth != n*50 || st.NextSeq != n*50+1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOverflowDropsLowestSeverityOldestFirst(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spool.db")
	size := entrySize(finding(wirev1.Severity_SEVERITY_LOW, "s-00"))
	// Room for exactly 10 findings of this size.
	s := open(t, path, size*10)

	// 4 low, 3 high, 3 medium (interleaved order in time).
	mk := func(sev wirev1.Severity, tag string) []*wirev1.Finding {
		return []*wirev1.Finding{finding(sev, tag)}
	}
	order := []struct {
		sev wirev1.Severity
		tag string
	}{
		{1, "L1"}, {3, "H1"}, {1, "L2"}, {2, "M1"}, {1, "L3"}, {3, "H2"}, {2, "M2"}, {1, "L4"}, {3, "H3"}, {2, "M3"},
	}
	for _, o := range order {
		if err := s.Append(ctx, mk(o.sev, o.tag)); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Depth != 10 || st.Dropped != 0 {
		t.Fatalf("full spool stats %+v", st)
	}
	// 5 more critical findings in one batch: the 4 lows go, then the oldest medium.
	if err := s.Append(ctx, []*wirev1.Finding{
		finding(4, "C1"), finding(4, "C2"), finding(4, "C3"), finding(4, "C4"), finding(4, "C5"),
	}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Peek(100, 0)
	var tags []string
	for _, f := range got {
		tags = append(tags, f.Summary)
	}
	want := "[H1 H2 M2 H3 M3 C1 C2 C3 C4 C5]"
	if fmt.Sprint(tags) != want {
		t.Fatalf("after overflow %v, want %s", tags, want)
	}
	st := s.Stats()
	if st.Dropped != 5 || st.Depth != 10 || int64(st.Bytes) > size*10 {
		t.Fatalf("stats %+v", st)
	}
	// A batch of low findings bigger than the room drops from itself
	// (its findings are the lowest severity) but keeps higher ones.
	if err := s.Append(ctx, batch(3, wirev1.Severity_SEVERITY_LOW, "l")); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Peek(100, 0)
	if len(got) != 10 || got[0].Summary != "H1" {
		t.Fatalf("low batch into full spool changed content: %v", seqs(got))
	}
	if st := s.Stats(); st.Dropped != 8 || st.NextSeq != 19 {
		t.Fatalf("stats %+v, want dropped 8 next 19", st)
	}
	// The drop counter persists.
	s.Close()
	s = open(t, path, size*10)
	defer s.Close()
	if st := s.Stats(); st.Dropped != 8 || st.Depth != 10 {
		t.Fatalf("stats after reopen %+v", st)
	}
	if d := s.DepthBySeverity(); d[1] != 0 || d[2] != 2 || d[3] != 3 || d[4] != 5 {
		t.Fatalf("depth by severity %v", d)
	}
}

func TestOverflowCountsExactlyUnderLoad(t *testing.T) {
	ctx := context.Background()
	size := entrySize(finding(wirev1.Severity_SEVERITY_LOW, "s-000"))
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), size*100)
	defer s.Close()
	total := 0
	for i := 0; i < 30; i++ {
		fs := make([]*wirev1.Finding, 17)
		for j := range fs {
			fs[j] = finding(wirev1.Severity(1+(i+j)%4), fmt.Sprintf("s-%03d", j))
		}
		if err := s.Append(ctx, fs); err != nil {
			t.Fatal(err)
		}
		total += len(fs)
	}
	st := s.Stats()
	if st.Depth+st.Dropped != uint64(total) {
		t.Fatalf("depth %d + dropped %d != appended %d", st.Depth, st.Dropped, total)
	}
	if int64(st.Bytes) > size*100 {
		t.Fatalf("bytes %d above bound %d", st.Bytes, size*100)
	}
	// The survivors are the highest severities.
	got, _ := s.Peek(1000, 0)
	minSev := wirev1.Severity(10)
	for _, f := range got {
		minSev = min(minSev, f.Severity)
	}
	if minSev < wirev1.Severity_SEVERITY_HIGH {
		t.Fatalf("a severity-%v finding survived while %d were dropped", minSev, st.Dropped)
	}
}

func TestOversizedFindingDropped(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), 0)
	defer s.Close()
	// Known fields are trimmed to the protocol's limits (TestAppendTrims):
	// only unknown fields (a newer producer's) can make a finding this big.
	big := finding(wirev1.Severity_SEVERITY_HIGH, "big")
	big.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 999, protowire.BytesType), make([]byte, MaxFindingSize)))
	if err := s.Append(context.Background(), []*wirev1.Finding{finding(1, "a"), big, finding(1, "b")}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Peek(10, 0)
	if fmt.Sprint(seqs(got)) != "[1 3]" {
		t.Fatalf("seqs %v", seqs(got))
	}
	if st := s.Stats(); st.Dropped != 1 {
		t.Fatalf("dropped %d", st.Dropped)
	}
}

// TestAppendTrims: a finding over the protocol's limits (a summary and a
// path too long for the server) is stored cut to them, on a UTF-8 boundary.
func TestAppendTrims(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), 0)
	defer s.Close()
	long := "/srv/" + strings.Repeat("dossier-é/", 500) // 5,505 bytes
	f := finding(wirev1.Severity_SEVERITY_HIGH, "Anomalous file "+long+" (renamed from "+long+")")
	f.Context.Path = long
	if err := s.Append(context.Background(), []*wirev1.Finding{finding(1, "a"), f}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Peek(10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d findings stored", len(got))
	}
	g := got[1]
	if n := len(g.Summary); n > wirev1.MaxSummaryLen || !strings.HasPrefix(g.Summary, "Anomalous file /srv/dossier-é/") ||
		!strings.HasSuffix(g.Summary, wirev1.Ellipsis) || !utf8.ValidString(g.Summary) {
		t.Errorf("summary of %d bytes: %q...", n, g.Summary[:40])
	}
	if n := len(g.Context.GetPath()); n > wirev1.MaxPathLen || !utf8.ValidString(g.Context.GetPath()) {
		t.Errorf("path of %d bytes", n)
	}
	if st := s.Stats(); st.Dropped != 0 {
		t.Errorf("dropped %d", st.Dropped)
	}
}

func TestNotify(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), 0)
	defer s.Close()
	select {
	case <-s.Notify():
		t.Fatal("notified before any append")
	default:
	}
	_ = s.Append(context.Background(), batch(1, 1, "a"))
	_ = s.Append(context.Background(), batch(1, 1, "b"))
	select {
	case <-s.Notify():
	default:
		t.Fatal("no notification after append")
	}
}

func TestConcurrentAppendPeekAck(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), 0)
	defer s.Close()
	const writers, batches, per = 4, 25, 20
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < batches; b++ {
				if err := s.Append(ctx, batch(per, wirev1.Severity(1+b%4), "c")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// A consumer acks what it peeks, checking strict order.
	done := make(chan struct{})
	var consumed int
	go func() {
		defer close(done)
		var last uint64
		deadline := time.Now().Add(30 * time.Second)
		for consumed < writers*batches*per && time.Now().Before(deadline) {
			fs, err := s.Peek(64, 0)
			if err != nil {
				t.Error(err)
				return
			}
			if len(fs) == 0 {
				select {
				case <-s.Notify():
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
			for _, f := range fs {
				if f.Seq <= last {
					t.Errorf("seq %d after %d", f.Seq, last)
					return
				}
				last = f.Seq
			}
			if err := s.Ack(last); err != nil {
				t.Error(err)
				return
			}
			consumed += len(fs)
		}
	}()
	wg.Wait()
	<-done
	if consumed != writers*batches*per {
		t.Fatalf("consumed %d, want %d", consumed, writers*batches*per)
	}
	if st := s.Stats(); st.Depth != 0 || st.Bytes != 0 || st.NextSeq != writers*batches*per+1 {
		t.Fatalf("final stats %+v", st)
	}
}

func TestReadStats(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	s := open(t, path, 0)
	_ = s.Append(context.Background(), batch(7, 2, "r"))
	_ = s.Ack(2)
	want := s.Stats()
	// While the spool is open, the read-only open times out on the lock.
	if _, err := ReadStats(path, 50*time.Millisecond); err == nil {
		t.Fatal("ReadStats succeeded while a writer holds the lock")
	}
	s.Close()
	got, err := ReadStats(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want.CapacityBytes = 0
	if !proto.Equal(got, want) {
		t.Fatalf("ReadStats %v, want %v", got, want)
	}
}

func BenchmarkAppend(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			s := open(b, filepath.Join(b.TempDir(), "spool.db"), 1<<30)
			defer s.Close()
			ctx := context.Background()
			tmpl := batch(n, wirev1.Severity_SEVERITY_MEDIUM, "bench")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := s.Append(ctx, tmpl); err != nil {
					b.Fatal(err)
				}
				if i%16 == 15 { // keep the file from growing without bound
					st := s.Stats()
					if err := s.Ack(st.NextSeq - 1); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "findings/s")
		})
	}
}

// TestPeekRawFrom: the raw peek returns what PeekFrom decodes (same seqs,
// same findings once decoded), honours max, maxBytes and from, and refuses
// an entry that is not protobuf.
func TestPeekRawFrom(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), 0)
	defer s.Close()
	if err := s.Append(ctx, batch(20, wirev1.Severity_SEVERITY_HIGH, "raw")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		from          uint64
		max, maxBytes int
	}{{0, 0, 0}, {5, 3, 0}, {1, 100, 1}, {1, 100, 500}, {21, 10, 0}} {
		want, err := s.PeekFrom(c.from, c.max, c.maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		gotSeqs, data, err := s.PeekRawFrom(c.from, c.max, c.maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(gotSeqs) != len(want) || len(data) != len(want) {
			t.Fatalf("%+v: %d raw, %d decoded", c, len(gotSeqs), len(want))
		}
		for i, w := range want {
			var f wirev1.Finding
			if err := proto.Unmarshal(data[i], &f); err != nil {
				t.Fatal(err)
			}
			if gotSeqs[i] != w.Seq || !proto.Equal(&f, w) {
				t.Fatalf("%+v #%d: seq %d %v, want %v", c, i, gotSeqs[i], &f, w)
			}
		}
	}
	// A corrupt entry (not protobuf) is an error, not a frame to send.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFindings).Put(u64(3), []byte{1, 0x0a, 0xff})
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PeekRawFrom(1, 10, 0); err == nil {
		t.Fatal("corrupt entry peeked")
	}
}
