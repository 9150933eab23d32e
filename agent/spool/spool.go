// Package spool is the agent's durable findings queue: a bbolt file, bounded
// in bytes, that assigns every finding a strictly increasing sequence number,
// keeps it until the server acknowledges it, and, when full, drops the oldest
// findings of the lowest severity first and counts every drop.
//
// Layout of the bbolt file:
//
//	findings: key = seq (8 bytes big endian), value = severity (1 byte) + protobuf Finding
//	meta:     next_seq, acked_seq, dropped, refused, renumbers (8 bytes big endian each), version,
//	          seq_synced (absent in files of older agents)
//
// Seqs and the server. The server stores each (agent, seq) once. A spool
// file that is lost or recreated while the agent's identity stays numbers
// from 1 again, and the server would take its findings for duplicates of
// stored ones. SyncSeqs, called with the highest seq the server holds for
// the agent (HelloAck.highest_seq) before anything is sent, renumbers the
// waiting findings and the next seq above it when the spool is new (it has
// never been compared with the server: seq_synced = 0) or went backwards
// (its next seq is at or below the server's highest).
//
// Every Append and Ack is one bbolt read-write transaction, committed with
// fsync (bbolt's default; NoSync is never set). The byte bound is the sum of
// the stored keys and values of waiting findings (the file itself keeps its
// high-water size: bbolt reuses freed pages but does not shrink the file).
package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// DefaultMaxBytes is the default bound of the findings waiting in the spool.
const DefaultMaxBytes = 64 << 20

// MaxFindingSize is the largest encoded finding the spool accepts. A larger
// one could never be sent in a frame; it is dropped and counted.
const MaxFindingSize = 256 << 10

// entryOverhead is what the accounting adds to the encoded finding: key and severity byte.
const entryOverhead = 8 + 1

var (
	bucketFindings = []byte("findings")
	bucketMeta     = []byte("meta")
	keyNextSeq     = []byte("next_seq")
	keyAckedSeq    = []byte("acked_seq")
	keyDropped     = []byte("dropped")
	keyRefused     = []byte("refused")
	keyVersion     = []byte("version")
	keySeqSynced   = []byte("seq_synced")
	keyRenumbers   = []byte("renumbers")
)

const formatVersion = 1

// ErrClosed is returned by calls on a closed spool.
var ErrClosed = errors.New("spool closed")

// ErrCorrupt is wrapped by the errors of Open and ReadStats for a spool file
// that is damaged (a torn write, a bad sector): it is left as it is.
var ErrCorrupt = errors.New("spool file corrupt")

// Options tune a spool.
type Options struct {
	// MaxBytes bounds the waiting findings (keys + values); <= 0 means DefaultMaxBytes.
	MaxBytes int64
	// Timeout waits for the file lock (another process holding the spool); 0 means 5 s.
	Timeout time.Duration
}

// Spool is a durable, bounded findings queue. It is safe for concurrent use.
type Spool struct {
	db       *bolt.DB
	maxBytes int64
	notify   chan struct{}

	mu        sync.Mutex // serialises writers and guards the fields below
	closed    bool
	nextSeq   uint64 // next seq to assign (seqs start at 1)
	ackedSeq  uint64
	dropped   uint64
	bytes     int64
	depth     int
	bySev     [numSev]queue // per severity, seq order
	oversized uint64        // dropped because too large (also counted in dropped)
	refused   uint64        // dropped by DropRefused (the server refused them), persisted
	synced    bool          // seqs compared with the server's (SyncSeqs), persisted
	renumbers uint64        // SyncSeqs renumberings, persisted
}

const numSev = int(wirev1.Severity_SEVERITY_CRITICAL) + 1

// sevIndex maps a severity to its index (unknown values count as critical,
// so that a newer sender's severities are never dropped first).
func sevIndex(s wirev1.Severity) int {
	if s < 0 {
		return 0
	}
	if int(s) >= numSev {
		return numSev - 1
	}
	return int(s)
}

// Open opens or creates the spool at path. A damaged file is refused with
// an error (wrapping ErrCorrupt when a page or a meta page fails bbolt's
// checks) and left as it is: the agent stops with that reason instead of
// crashing in bbolt. A stored finding that no longer decodes is dropped and
// counted.
func Open(path string, opts Options) (*Spool, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if err := checkFile(path, opts.Timeout); err != nil {
		if errors.Is(err, ErrCorrupt) {
			return nil, fmt.Errorf("open spool %s: %w (left as it is: move it aside to start with an empty spool)", path, err)
		}
		return nil, fmt.Errorf("open spool %s: %w", path, err)
	}
	db, err := openBolt(path, &bolt.Options{
		Timeout: opts.Timeout,
		// The freelist is rebuilt on open instead of being written on every
		// commit; the data pages are still fsynced on every commit.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("open spool %s: %w", path, err)
	}
	s := &Spool{db: db, maxBytes: opts.MaxBytes, notify: make(chan struct{}, 1), nextSeq: 1}
	if err := s.load(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open spool %s: %w", path, err)
	}
	return s, nil
}

// checkFile reads every page of the spool file at path, read-only, and
// reports damage (a torn write, a bad sector) as an error wrapping
// ErrCorrupt. bbolt asserts on a damaged page by panicking, and a writable
// Open rebuilds the freelist (NoFreelistSync) on a goroutine of its own
// that walks the same pages, where no recover can reach: the process
// crashed. A missing or empty file is for Open to create.
func checkFile(path string, timeout time.Duration) error {
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		return nil
	}
	db, err := openBolt(path, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return err
	}
	defer db.Close()
	return walkPages(db)
}

// openBolt is bolt.Open with its assertions (panics on the calling
// goroutine) and its errors for a damaged file wrapping ErrCorrupt.
func openBolt(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, opts)
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) {
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return db, err
}

// walkPages visits every branch and leaf page of every bucket of db: the
// pages bbolt's freelist rebuild visits. A page that fails bbolt's checks,
// or that points outside the mapped file, is reported as ErrCorrupt.
func walkPages(db *bolt.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	// A damaged page id can point past the file: a fault, not a panic.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var walk func(b *bolt.Bucket)
	walk = func(b *bolt.Bucket) {
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if v == nil {
				if sub := b.Bucket(k); sub != nil {
					walk(sub)
				}
			}
		}
	}
	return db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			walk(b)
			return nil
		})
	})
}

func (s *Spool) load() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return fmt.Errorf("create meta bucket: %w", err)
		}
		fb, err := tx.CreateBucketIfNotExists(bucketFindings)
		if err != nil {
			return fmt.Errorf("create findings bucket: %w", err)
		}
		if v := meta.Get(keyVersion); v != nil {
			if ver := getU64(v); ver != formatVersion {
				return fmt.Errorf("spool format version %d, want %d", ver, formatVersion)
			}
		} else {
			if err := meta.Put(keyVersion, u64(formatVersion)); err != nil {
				return fmt.Errorf("write version: %w", err)
			}
			// A new file: its seqs start at 1, below whatever the server
			// may hold for this agent from an earlier spool.
			if err := meta.Put(keySeqSynced, u64(0)); err != nil {
				return fmt.Errorf("write seq state: %w", err)
			}
		}
		// A file of an older agent has no seq_synced: its seqs went on from
		// its own start, so it counts as compared.
		s.synced = meta.Get(keySeqSynced) == nil || getU64(meta.Get(keySeqSynced)) != 0
		s.renumbers = getU64(meta.Get(keyRenumbers))
		if v := meta.Get(keyNextSeq); v != nil {
			s.nextSeq = getU64(v)
		}
		s.ackedSeq = getU64(meta.Get(keyAckedSeq))
		s.dropped = getU64(meta.Get(keyDropped))
		s.refused = getU64(meta.Get(keyRefused))
		var last uint64
		var undecodable [][]byte
		f := &wirev1.Finding{}
		err = fb.ForEach(func(k, v []byte) error {
			if len(k) != 8 || len(v) < 1 {
				return fmt.Errorf("%w: entry with key %x, %d value bytes", ErrCorrupt, k, len(v))
			}
			seq := binary.BigEndian.Uint64(k)
			last = seq
			// A finding that no longer decodes (a damaged value) would fail
			// every Peek from here on, and the uplink with it: dropped.
			if err := proto.Unmarshal(v[1:], f); err != nil {
				undecodable = append(undecodable, bytes.Clone(k))
				return nil
			}
			size := int64(len(k) + len(v))
			s.bySev[sevIndex(wirev1.Severity(v[0]))].push(entry{seq: seq, size: size})
			s.bytes += size
			s.depth++
			return nil
		})
		if err != nil {
			return fmt.Errorf("rebuild index: %w", err)
		}
		if len(undecodable) > 0 {
			for _, k := range undecodable {
				if err := fb.Delete(k); err != nil {
					return fmt.Errorf("drop undecodable finding: %w", err)
				}
			}
			s.dropped += uint64(len(undecodable))
			if err := meta.Put(keyDropped, u64(s.dropped)); err != nil {
				return fmt.Errorf("put dropped: %w", err)
			}
		}
		// Never reuse a seq, even if the meta record were behind the data.
		if last >= s.nextSeq {
			s.nextSeq = last + 1
		}
		if s.nextSeq == 0 {
			s.nextSeq = 1
		}
		return nil
	})
}

// Renumbering is what SyncSeqs did.
type Renumbering struct {
	Findings int    // waiting findings that got new seqs
	OldNext  uint64 // next seq before
	NewNext  uint64 // next seq after
}

// maxRenumberChunk bounds the entries copied in memory at once while
// renumbering (all of them in one transaction).
const maxRenumberChunk = 4096

// SyncSeqs compares the spool's seqs with highest, the highest seq the
// server has stored for this agent, before the uplink sends anything on a
// new session. When the spool was never compared (a new file) and highest
// is not 0, or when its next seq is at or below highest (it went
// backwards), it gives every waiting finding a new seq above highest, in
// the same order, and moves the next seq after them, in one transaction:
// the server would otherwise ignore them as duplicates. It reports whether
// it renumbered (counted, persisted: Renumbers). Otherwise it only records
// that the spool was compared. Only the keys change: a finding's seq is its
// key (Peek sets it, PeekRawFrom's callers frame it after the stored
// encoding, whose own seq field it supersedes).
func (s *Spool) SyncSeqs(highest uint64) (Renumbering, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Renumbering{}, false, ErrClosed
	}
	if highest >= math.MaxInt64 {
		// The server stores seqs up to MaxInt64: none can follow this one.
		return Renumbering{}, false, fmt.Errorf("sync seqs: server's highest seq %d out of range", highest)
	}
	need := highest > 0 && (!s.synced || s.nextSeq <= highest)
	if !need {
		if s.synced {
			return Renumbering{}, false, nil
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keySeqSynced, u64(1))
		})
		if err != nil {
			return Renumbering{}, false, fmt.Errorf("sync seqs: %w", err)
		}
		s.synced = true
		return Renumbering{}, false, nil
	}
	// The new seqs start above the server's highest and above every seq
	// this spool has assigned (a new spool may have numbered past highest
	// while offline): no seq is ever reused.
	oldNext := s.nextSeq
	first := max(highest+1, oldNext)
	if first > math.MaxInt64-uint64(s.depth) {
		// The server refuses seqs above MaxInt64.
		return Renumbering{}, false, fmt.Errorf("sync seqs: server's highest seq %d out of range", highest)
	}
	newNext := first
	var (
		bySev [numSev]queue
		moved int
		bytes int64
	)
	err := s.db.Update(func(tx *bolt.Tx) error {
		fb := tx.Bucket(bucketFindings)
		meta := tx.Bucket(bucketMeta)
		// Every old key is below oldNext <= first: walk the old keys in
		// order, a chunk at a time (a cursor must not run across its own
		// writes), and move each to the next new key.
		type kv struct {
			seq uint64
			v   []byte
		}
		var chunk []kv
		from := uint64(0)
		for {
			chunk = chunk[:0]
			c := fb.Cursor()
			for k, v := c.Seek(u64(from)); k != nil && len(chunk) < maxRenumberChunk; k, v = c.Next() {
				if len(k) != 8 || len(v) < 1 {
					return fmt.Errorf("corrupt entry (key %x, %d value bytes)", k, len(v))
				}
				seq := binary.BigEndian.Uint64(k)
				if seq >= oldNext {
					break
				}
				chunk = append(chunk, kv{seq, append([]byte(nil), v...)})
			}
			if len(chunk) == 0 {
				break
			}
			for _, e := range chunk {
				if err := fb.Delete(u64(e.seq)); err != nil {
					return fmt.Errorf("delete finding %d: %w", e.seq, err)
				}
				if err := fb.Put(u64(newNext), e.v); err != nil {
					return fmt.Errorf("put finding %d as %d: %w", e.seq, newNext, err)
				}
				size := int64(8 + len(e.v))
				bySev[sevIndex(wirev1.Severity(e.v[0]))].push(entry{seq: newNext, size: size})
				bytes += size
				newNext++
				moved++
			}
			from = chunk[len(chunk)-1].seq + 1
		}
		for _, m := range []struct {
			k []byte
			v uint64
		}{{keyNextSeq, newNext}, {keyAckedSeq, first - 1}, {keySeqSynced, 1}, {keyRenumbers, s.renumbers + 1}} {
			if err := meta.Put(m.k, u64(m.v)); err != nil {
				return fmt.Errorf("put %s: %w", m.k, err)
			}
		}
		return nil
	})
	if err != nil {
		return Renumbering{}, false, fmt.Errorf("sync seqs above %d: %w", highest, err)
	}
	// Committed: the index follows the file.
	s.bySev = bySev
	s.depth = moved
	s.bytes = bytes
	s.nextSeq = newNext
	s.ackedSeq = first - 1
	s.synced = true
	s.renumbers++
	return Renumbering{Findings: moved, OldNext: oldNext, NewNext: newNext}, true, nil
}

// Renumbers returns how many times SyncSeqs renumbered, over the spool
// file's life.
func (s *Spool) Renumbers() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renumbers
}

// Close closes the file. Further calls return ErrClosed.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close spool: %w", err)
	}
	return nil
}

// Notify returns a channel that receives a value (coalesced) after findings
// were appended. It has one reader: the uplink.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

type pending struct {
	seq  uint64
	sev  int
	data []byte // severity byte + encoded finding
}

// Append assigns seqs to the findings (it sets their Seq field), stores them
// in one transaction (fsynced) and, if the spool overflows, drops the oldest
// findings of the lowest severity first (possibly some of this batch).
// Findings larger than MaxFindingSize are dropped and counted. Each finding
// is first fitted into the protocol's limits (wirev1.TrimFinding): the
// server refuses a batch that holds a finding beyond them, so a finding that
// any producer built too long is cut here, not stuck in the spool.
func (s *Spool) Append(ctx context.Context, fs []*wirev1.Finding) error {
	if len(fs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("append to spool: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}

	seq := s.nextSeq
	var (
		news      [numSev][]pending
		newBytes  int64
		oversized uint64
	)
	mo := proto.MarshalOptions{Deterministic: true}
	for _, f := range fs {
		if f == nil {
			continue
		}
		f.Seq = seq
		wirev1.TrimFinding(f)
		buf := make([]byte, 1, 1+mo.Size(f))
		buf[0] = byte(sevIndex(f.Severity))
		buf, err := mo.MarshalAppend(buf, f)
		if err != nil {
			return fmt.Errorf("append to spool: encode finding: %w", err)
		}
		seq++
		if len(buf)-1 > MaxFindingSize {
			oversized++
			continue
		}
		si := int(buf[0])
		news[si] = append(news[si], pending{seq: f.Seq, sev: si, data: buf})
		newBytes += int64(len(buf) + 8)
	}

	// Plan evictions without touching the in-memory index, so that a failed
	// commit leaves it unchanged: per severity, old entries first, then new.
	total := s.bytes + newBytes
	var evictOld [numSev]int // how many old entries of each severity go
	var evictNew [numSev]int // how many of this batch's entries of each severity go
	for si := 0; si < numSev && total > s.maxBytes; si++ {
		q := &s.bySev[si]
		for total > s.maxBytes && evictOld[si] < q.len() {
			e := q.at(evictOld[si])
			total -= e.size
			evictOld[si]++
		}
		for total > s.maxBytes && evictNew[si] < len(news[si]) {
			total -= int64(len(news[si][evictNew[si]].data) + 8)
			evictNew[si]++
		}
	}
	var drops uint64 = oversized
	for si := range numSev {
		drops += uint64(evictOld[si] + evictNew[si])
	}

	err := s.db.Update(func(tx *bolt.Tx) error {
		fb := tx.Bucket(bucketFindings)
		meta := tx.Bucket(bucketMeta)
		for si := range numSev {
			for i := 0; i < evictOld[si]; i++ {
				if err := fb.Delete(u64(s.bySev[si].at(i).seq)); err != nil {
					return fmt.Errorf("drop finding: %w", err)
				}
			}
			for _, p := range news[si][evictNew[si]:] {
				if err := fb.Put(u64(p.seq), p.data); err != nil {
					return fmt.Errorf("put finding: %w", err)
				}
			}
		}
		if err := meta.Put(keyNextSeq, u64(seq)); err != nil {
			return fmt.Errorf("put next seq: %w", err)
		}
		if drops > 0 {
			if err := meta.Put(keyDropped, u64(s.dropped+drops)); err != nil {
				return fmt.Errorf("put dropped: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append to spool: %w", err)
	}

	// Committed: apply to memory.
	s.nextSeq = seq
	s.dropped += drops
	s.oversized += oversized
	s.bytes = total
	for si := range numSev {
		s.bySev[si].popN(evictOld[si])
		s.depth -= evictOld[si]
		for _, p := range news[si][evictNew[si]:] {
			s.bySev[si].push(entry{seq: p.seq, size: int64(len(p.data) + 8)})
			s.depth++
		}
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

// Peek returns up to max waiting findings, oldest first, whose encoded sizes
// sum to at most maxBytes (at least one finding if any waits). max <= 0
// means 500; maxBytes <= 0 means no byte bound.
func (s *Spool) Peek(max, maxBytes int) ([]*wirev1.Finding, error) {
	return s.PeekFrom(0, max, maxBytes)
}

// PeekFrom is Peek starting at the first waiting finding with seq >= from,
// for senders that keep several batches in flight.
func (s *Spool) PeekFrom(from uint64, max, maxBytes int) ([]*wirev1.Finding, error) {
	if max <= 0 {
		max = 500
	}
	var out []*wirev1.Finding
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketFindings).Cursor()
		sum := 0
		for k, v := c.Seek(u64(from)); k != nil && len(out) < max; k, v = c.Next() {
			if len(v) < 1 {
				return fmt.Errorf("corrupt entry %x", k)
			}
			n := len(v) - 1
			if maxBytes > 0 && len(out) > 0 && sum+n > maxBytes {
				break
			}
			f := &wirev1.Finding{}
			if err := proto.Unmarshal(v[1:], f); err != nil {
				return fmt.Errorf("decode finding %d: %w", binary.BigEndian.Uint64(k), err)
			}
			f.Seq = binary.BigEndian.Uint64(k)
			out = append(out, f)
			sum += n
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, bolt.ErrDatabaseNotOpen) {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("peek spool: %w", err)
	}
	return out, nil
}

// PeekRawFrom is PeekFrom without decoding: it returns the findings' seqs
// and their protobuf encodings (wirev1.Finding, seq included) as stored, so
// that a sender can frame them without decoding and re-encoding each (the
// uplink does: that was about half of its CPU per finding). Each encoding is
// checked to be well-formed protobuf; the slices are the caller's (copies,
// sharing one buffer).
func (s *Spool) PeekRawFrom(from uint64, max, maxBytes int) (seqs []uint64, data [][]byte, err error) {
	if max <= 0 {
		max = 500
	}
	var buf []byte
	var ends []int
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketFindings).Cursor()
		sum := 0
		for k, v := c.Seek(u64(from)); k != nil && len(seqs) < max; k, v = c.Next() {
			if len(v) < 1 || len(k) != 8 {
				return fmt.Errorf("corrupt entry %x", k)
			}
			n := len(v) - 1
			if maxBytes > 0 && len(seqs) > 0 && sum+n > maxBytes {
				break
			}
			seq := binary.BigEndian.Uint64(k)
			if err := wellFormed(v[1:]); err != nil {
				return fmt.Errorf("decode finding %d: %w", seq, err)
			}
			if buf == nil {
				buf = make([]byte, 0, min(max*(n+8), 1<<20)) // grows if the findings are larger
			}
			buf = append(buf, v[1:]...)
			seqs = append(seqs, seq)
			ends = append(ends, len(buf))
			sum += n
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, bolt.ErrDatabaseNotOpen) {
			return nil, nil, ErrClosed
		}
		return nil, nil, fmt.Errorf("peek spool: %w", err)
	}
	data = make([][]byte, len(ends))
	start := 0
	for i, end := range ends {
		data[i] = buf[start:end:end]
		start = end
	}
	return seqs, data, nil
}

// wellFormed checks that b is a sequence of protobuf fields (without
// decoding them into a message).
func wellFormed(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return protowire.ParseError(m)
		}
		b = b[n+m:]
	}
	return nil
}

// Ack deletes every waiting finding with seq <= throughSeq. Acknowledging a
// seq that was never assigned is an error (a confused or hostile peer).
func (s *Spool) Ack(throughSeq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if throughSeq >= s.nextSeq {
		return fmt.Errorf("ack through %d: only seqs below %d were assigned", throughSeq, s.nextSeq)
	}
	if throughSeq <= s.ackedSeq {
		return nil
	}
	var n [numSev]int
	var freed int64
	for si := range numSev {
		q := &s.bySev[si]
		for n[si] < q.len() && q.at(n[si]).seq <= throughSeq {
			freed += q.at(n[si]).size
			n[si]++
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		// Delete by the keys the index knows (a cursor that restarts at
		// First after each delete walks emptied pages: quadratic).
		fb := tx.Bucket(bucketFindings)
		for si := range numSev {
			for i := 0; i < n[si]; i++ {
				if err := fb.Delete(u64(s.bySev[si].at(i).seq)); err != nil {
					return fmt.Errorf("delete finding: %w", err)
				}
			}
		}
		if err := tx.Bucket(bucketMeta).Put(keyAckedSeq, u64(throughSeq)); err != nil {
			return fmt.Errorf("put acked seq: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ack spool through %d: %w", throughSeq, err)
	}
	s.ackedSeq = throughSeq
	s.bytes -= freed
	for si := range numSev {
		s.bySev[si].popN(n[si])
		s.depth -= n[si]
	}
	return nil
}

// DropRefused deletes the finding seq if it is the oldest waiting one (the
// uplink drops a finding the server refused alone several times) and counts
// it in the same transaction, so that the count outlives the agent. It
// reports whether the finding was dropped (false: acknowledged or dropped
// meanwhile, or not the oldest).
func (s *Spool) DropRefused(seq uint64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ErrClosed
	}
	oldest := -1
	for si := range numSev {
		if q := &s.bySev[si]; q.len() > 0 && (oldest < 0 || q.at(0).seq < s.bySev[oldest].at(0).seq) {
			oldest = si
		}
	}
	if oldest < 0 || s.bySev[oldest].at(0).seq != seq {
		return false, nil
	}
	e := s.bySev[oldest].at(0)
	acked := max(s.ackedSeq, seq)
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketFindings).Delete(u64(seq)); err != nil {
			return fmt.Errorf("delete finding: %w", err)
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keyAckedSeq, u64(acked)); err != nil {
			return fmt.Errorf("put acked seq: %w", err)
		}
		if err := meta.Put(keyRefused, u64(s.refused+1)); err != nil {
			return fmt.Errorf("put refused: %w", err)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("drop refused finding %d: %w", seq, err)
	}
	s.ackedSeq = acked
	s.refused++
	s.bytes -= e.size
	s.bySev[oldest].popN(1)
	s.depth--
	return true, nil
}

// Refused returns how many findings DropRefused dropped, over the spool
// file's life.
func (s *Spool) Refused() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// Stats reports the spool's state for Status messages and metrics.
func (s *Spool) Stats() *wirev1.SpoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &wirev1.SpoolStats{
		Depth:         uint64(s.depth),
		Bytes:         uint64(s.bytes),
		Dropped:       s.dropped,
		NextSeq:       s.nextSeq,
		AckedSeq:      s.ackedSeq,
		CapacityBytes: uint64(s.maxBytes),
	}
}

// DepthBySeverity returns the number of waiting findings per severity
// (index = wirev1.Severity value).
func (s *Spool) DepthBySeverity() [numSev]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [numSev]int
	for i := range numSev {
		out[i] = s.bySev[i].len()
	}
	return out
}

// ReadStats opens the spool file read-only (waiting at most timeout for the
// lock a running agent holds) and returns its stats; for `vigil-agent status`.
func ReadStats(path string, timeout time.Duration) (*wirev1.SpoolStats, error) {
	db, err := openBolt(path, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("open spool %s read-only: %w", path, err)
	}
	defer db.Close()
	if err := walkPages(db); err != nil {
		return nil, fmt.Errorf("read spool %s: %w", path, err)
	}
	st := &wirev1.SpoolStats{NextSeq: 1}
	err = db.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			if v := meta.Get(keyNextSeq); v != nil {
				st.NextSeq = getU64(v)
			}
			st.AckedSeq = getU64(meta.Get(keyAckedSeq))
			st.Dropped = getU64(meta.Get(keyDropped))
		}
		if fb := tx.Bucket(bucketFindings); fb != nil {
			return fb.ForEach(func(k, v []byte) error {
				st.Depth++
				st.Bytes += uint64(len(k) + len(v))
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read spool %s: %w", path, err)
	}
	return st, nil
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// entry is one waiting finding in the in-memory index.
type entry struct {
	seq  uint64
	size int64
}

// queue is a FIFO of entries in seq order; removal is only at the front
// (drops and acks both remove the oldest), so pops are amortised O(1).
type queue struct {
	items []entry
	head  int
}

func (q *queue) len() int       { return len(q.items) - q.head }
func (q *queue) at(i int) entry { return q.items[q.head+i] }
func (q *queue) push(e entry)   { q.items = append(q.items, e) }
func (q *queue) popN(n int) {
	q.head += n
	if q.head == len(q.items) {
		q.items = q.items[:0]
		q.head = 0
	} else if q.head > 1024 && q.head*2 > len(q.items) {
		q.items = append(q.items[:0:0], q.items[q.head:]...)
		q.head = 0
	}
}
