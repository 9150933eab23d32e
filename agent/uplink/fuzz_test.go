package uplink

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/quic-go/quic-go"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func TestIsRevoked(t *testing.T) {
	revoked := fmt.Errorf("dial: %w", &quic.TransportError{ErrorCode: quic.TransportErrorCode(wirev1.TLSAlertCertificateRevoked), Remote: true})
	other := fmt.Errorf("dial: %w", &quic.TransportError{ErrorCode: quic.TransportErrorCode(0x100 + 48), Remote: true}) // unknown_ca
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"certificate_revoked alert", revoked, true},
		{"other alert", other, false},
		{"plain error", errors.New("timeout"), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isRevoked(tt.err); got != tt.want {
				t.Fatalf("isRevoked(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// FuzzControlReader feeds arbitrary server bytes to the agent's CONTROL
// stream reader: it must end with an error (the stream is finite), never
// panic, and hand every ModelOffer to the callback.
func FuzzControlReader(f *testing.F) {
	var seed bytes.Buffer
	_ = wirev1.Write(&seed, &wirev1.ServerControl{Msg: &wirev1.ServerControl_HelloAck{HelloAck: &wirev1.HelloAck{AgentId: "a-1"}}}, 0)
	_ = wirev1.Write(&seed, &wirev1.ServerControl{Msg: &wirev1.ServerControl_SlowDown{SlowDown: &wirev1.SlowDown{MinBatchIntervalMs: 100, MaxBatch: 10}}}, 0)
	_ = wirev1.Write(&seed, &wirev1.ServerControl{Msg: &wirev1.ServerControl_ModelOffer{ModelOffer: &wirev1.ModelOffer{RolloutId: "r1"}}}, 0)
	_ = wirev1.Write(&seed, &wirev1.ServerControl{Msg: &wirev1.ServerControl_Renew{Renew: &wirev1.RenewResponse{}}}, 0)
	_ = wirev1.Write(&seed, &wirev1.ServerControl{Msg: &wirev1.ServerControl_Suppressions{Suppressions: &wirev1.Suppressions{
		Generation: 2, Items: []*wirev1.Suppression{{Id: 1, Detector: "netflow", DstPort: 22}}}}}, 0)
	f.Add(seed.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		offers := 0
		c := &Client{log: slog.New(slog.DiscardHandler)}
		c.cfg.OnModelOffer = func(*wirev1.ModelOffer) { offers++ }
		c.cfg.OnSuppressions = func(s *wirev1.Suppressions) {
			if s == nil {
				t.Fatal("nil suppressions handed to the callback")
			}
		}
		renew := make(chan *wirev1.RenewResponse, 1)
		err := c.controlReader(wirev1.NewReader(bytes.NewReader(data), 1<<16), renew)
		if err == nil {
			t.Fatal("controlReader returned nil at the end of a finite stream")
		}
		if len(data) == 0 && !errors.Is(err, io.EOF) {
			t.Fatalf("empty stream: %v", err)
		}
		_ = offers
	})
}

// TestControlReaderSuppressionsAndUnknown: a Suppressions push reaches
// OnSuppressions; a ServerControl case this agent does not know (a newer
// server's) is ignored, not an error.
func TestControlReaderSuppressionsAndUnknown(t *testing.T) {
	var in bytes.Buffer
	_ = wirev1.Write(&in, &wirev1.ServerControl{Msg: &wirev1.ServerControl_Suppressions{Suppressions: &wirev1.Suppressions{
		Generation: 3, Items: []*wirev1.Suppression{{Id: 7, Detector: "netflow", DstIp: "10.0.0.2", DstPort: 22}}}}}, 0)
	// Field 99 of ServerControl, a message with one string field: what an
	// unknown oneof case looks like on the wire.
	unknown := []byte{0x9a, 0x06, 0x03, 0x0a, 0x01, 'x'}
	in.WriteByte(byte(len(unknown)))
	in.Write(unknown)
	_ = wirev1.Write(&in, &wirev1.ServerControl{Msg: &wirev1.ServerControl_Suppressions{Suppressions: &wirev1.Suppressions{Generation: 4}}}, 0)
	var got []*wirev1.Suppressions
	c := &Client{log: slog.New(slog.DiscardHandler)}
	c.cfg.OnSuppressions = func(s *wirev1.Suppressions) { got = append(got, s) }
	err := c.controlReader(wirev1.NewReader(&in, 1<<16), make(chan *wirev1.RenewResponse, 1))
	if !errors.Is(err, io.EOF) {
		t.Fatalf("controlReader: %v, want EOF at the end", err)
	}
	if len(got) != 2 || got[0].Generation != 3 || got[0].Items[0].GetDstPort() != 22 || got[1].Generation != 4 || len(got[1].Items) != 0 {
		t.Fatalf("callbacks %v", got)
	}
}
