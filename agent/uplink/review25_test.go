package uplink

import (
	"log/slog"
	"testing"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestControlRefusalIsNoStrike: a session the server closed for a refused
// CONTROL or FETCH message (CodeRefused) is not counted against the
// findings in flight, while a refused FINDINGS batch (CodeProtocol) starts
// isolating the finding the server refuses.
func TestControlRefusalIsNoStrike(t *testing.T) {
	b := inflightBatch{first: 5, last: 9, n: 5}
	for _, tc := range []struct {
		code  wirev1.ErrorCode
		limit int
	}{
		{wirev1.CodeRefused, 0},
		{wirev1.CodeOverloaded, 0},
		{wirev1.CodeProtocol, 2},
		{wirev1.CodeFrameTooLarge, 2},
		{wirev1.CodeSequenceBroken, 2},
	} {
		c := &Client{log: slog.New(slog.DiscardHandler)}
		c.noteRefusal(&ServerError{Code: tc.code, Message: "x"}, b)
		if c.iso.limit != tc.limit || (tc.limit == 0 && c.iso != (isolation{})) {
			t.Errorf("%s: isolation %+v, want batch limit %d", tc.code, c.iso, tc.limit)
		}
	}
}
