package e2e

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestFoundationBadInput sends malformed input on raw QUIC connections with
// a valid agent certificate: each closes that connection with its
// application error code, while another agent (the real binary) keeps
// delivering findings through the same server process.
func TestFoundationBadInput(t *testing.T) {
	b := needBins(t)
	d := newDeployment(t, b, "e2e.vigil")
	d.start()
	bad := d.enroll("acme")
	good := d.enroll("acme")
	good.run("--demo-findings", "40/s")
	good.waitConnected()
	waitFor(t, 60*time.Second, func() string { return "the good agent's first findings" }, func() bool { return d.count(good.id.AgentID) > 0 })
	cert := bad.credentials().Cert

	frame := func(n int, body []byte) []byte { return append(protowire.AppendVarint(nil, uint64(n)), body...) }
	header := func(kind wirev1.StreamKind) []byte {
		m, _ := proto.Marshal(&wirev1.StreamHeader{Kind: kind, ProtocolVersion: wirev1.ProtocolVersion, AgentVersion: "e2e"})
		return frame(len(m), m)
	}
	junk := bytes.Repeat([]byte{0xff}, 64<<10)
	cases := []struct {
		name  string
		bytes []byte
		want  wirev1.ErrorCode
	}{
		{"oversized FindingsBatch frame", append(header(wirev1.StreamKind_STREAM_KIND_FINDINGS), frame(wirev1.MaxFrameSize+1, junk)...), wirev1.CodeFrameTooLarge},
		// A CONTROL refusal has a code of its own: the agent counts CodeFrameTooLarge against its findings.
		{"oversized CONTROL frame", append(header(wirev1.StreamKind_STREAM_KIND_CONTROL), frame(1<<20, junk)...), wirev1.CodeRefused},
		{"oversized stream header", frame(1<<20, junk), wirev1.CodeFrameTooLarge},
		{"garbage FindingsBatch frame", append(header(wirev1.StreamKind_STREAM_KIND_FINDINGS), frame(64, junk[:64])...), wirev1.CodeProtocol},
		{"garbage stream header", frame(16, junk[:16]), wirev1.CodeProtocol},
		{"length prefix not a varint", junk[:16], wirev1.CodeProtocol},
		{"unknown stream kind", header(99), wirev1.CodeUnknownKind},
	}
	before := d.count(good.id.AgentID)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c, err := d.dialRaw(ctx, &cert)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseWithError(0, "")
			st, err := c.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// The server may close before it read everything: a write
			// error is expected then.
			_, _ = st.Write(tc.bytes)
			cause := closeCause(t, c, 60*time.Second)
			code, ok := appCode(cause)
			if !ok || code != tc.want {
				t.Fatalf("connection closed with %v, want application error %s", cause, tc.want)
			}
		})
	}
	if d.p.exited() {
		t.Fatalf("server exited: %v\n%s", d.p.err, tail(d.log, 30))
	}
	// The good agent's session was not disturbed; the bad agent may still
	// connect properly.
	waitFor(t, 60*time.Second, func() string { return "the good agent keeps delivering" }, func() bool {
		return d.count(good.id.AgentID) >= before+40
	})
	if st := good.status(); !st.Connected {
		t.Fatalf("good agent disconnected: %+v", st)
	}
	if _, err := d.probeAuthed(&cert); err != nil {
		t.Fatalf("a well-behaved connection after the bad ones: %v", err)
	}
	good.p.stop(t, 30*time.Second)
	d.stop()
}
