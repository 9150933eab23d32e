package enroll

import (
	"crypto/sha256"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/pki"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// FuzzCheckResponse: whatever a server (or an attacker in its place) sends
// as EnrollResponse, checking it returns an error or a chain that verifies
// to a root with the pinned key; it never panics.
func FuzzCheckResponse(f *testing.F) {
	key, err := pki.NewKey()
	if err != nil {
		f.Fatal(err)
	}
	seed, _ := proto.Marshal(&wirev1.EnrollResponse{CertChainDer: [][]byte{{0x30, 0x03, 0x02, 0x01, 0x01}}, AgentId: "a-1", Entity: "acme"})
	f.Add(seed)
	f.Add([]byte{})
	pin := sha256.Sum256([]byte("no such key"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp wirev1.EnrollResponse
		if proto.Unmarshal(data, &resp) != nil {
			return
		}
		chain, root, err := checkResponse(&resp, key, pin[:])
		if err == nil {
			// Nothing hashes to the fixed pin, so no response can pass.
			t.Fatalf("accepted a response without the pinned root: chain %d certs, root %v", len(chain), root != nil)
		}
	})
}
