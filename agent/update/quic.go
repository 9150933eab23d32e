package update

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/internal/buildinfo"
	"github.com/vigil-edge/vigil/pki"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// QUICFetcher downloads bundles over a FETCH stream of its own QUIC connection to the server
// (mutual TLS with the agent's credentials, like the uplink's). A separate connection keeps the
// updater independent of the uplink's session; the server accepts several connections per agent.
type QUICFetcher struct {
	Dir    state.Dir
	Server string // HOST:PORT; "" = identity.json's
	// Timeout bounds one chunk's arrival (default 30 s).
	Timeout time.Duration
}

var _ Fetcher = (*QUICFetcher)(nil)

// Fetch implements Fetcher.
func (q *QUICFetcher) Fetch(ctx context.Context, digest string, offset, max uint64, w io.Writer) (uint64, error) {
	creds, err := q.Dir.LoadCredentials()
	if err != nil {
		return 0, fmt.Errorf("fetch: %w", err)
	}
	addr := q.Server
	if addr == "" {
		addr = creds.Identity.Server
	}
	host, _, err := state.SplitServer(addr)
	if err != nil {
		return 0, fmt.Errorf("fetch: %w", err)
	}
	timeout := q.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := quic.DialAddr(dctx, addr, pki.AgentTLSConfig(&creds.Cert, creds.Roots, host),
		&quic.Config{KeepAlivePeriod: 10 * time.Second, MaxIdleTimeout: timeout})
	cancel()
	if err != nil {
		return 0, fmt.Errorf("fetch: dial %s: %w", addr, err)
	}
	defer conn.CloseWithError(quic.ApplicationErrorCode(wirev1.CodeNoError), "fetch done")
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return 0, fmt.Errorf("fetch: open stream: %w", err)
	}
	defer st.Close()
	if err := wirev1.Write(st, &wirev1.StreamHeader{Kind: wirev1.StreamKind_STREAM_KIND_FETCH,
		ProtocolVersion: wirev1.ProtocolVersion, AgentVersion: buildinfo.Version}, 0); err != nil {
		return 0, fmt.Errorf("fetch: write header: %w", err)
	}
	if err := wirev1.Write(st, &wirev1.FetchRequest{Digest: digest, Offset: offset}, 0); err != nil {
		return 0, fmt.Errorf("fetch: write request: %w", err)
	}
	r := wirev1.NewReader(st, wirev1.MaxFrameSize)
	next := offset
	for {
		_ = st.SetReadDeadline(time.Now().Add(timeout))
		var c wirev1.FetchChunk
		if err := r.Read(&c); err != nil {
			return 0, fmt.Errorf("fetch: read chunk: %w", err)
		}
		if e := c.GetError(); e != nil {
			if wirev1.ErrorCode(e.Code) == wirev1.CodeNotFound {
				return 0, fmt.Errorf("fetch %s: %w", digest, ErrNotFound)
			}
			return 0, fmt.Errorf("fetch %s: server error %d: %.200s", digest, e.Code, e.Message)
		}
		switch {
		case c.Offset != next:
			return 0, fmt.Errorf("fetch: chunk at offset %d, expected %d", c.Offset, next)
		case c.Total > max:
			return 0, fmt.Errorf("fetch: %w: server announces %d bytes, at most %d", errTooLarge, c.Total, max)
		case uint64(len(c.Data)) > wirev1.MaxFetchChunk || c.Offset+uint64(len(c.Data)) > c.Total:
			return 0, errors.New("fetch: chunk beyond the announced size")
		}
		if _, err := w.Write(c.Data); err != nil {
			return 0, fmt.Errorf("fetch: %w", err)
		}
		next += uint64(len(c.Data))
		if c.Eof {
			if next != c.Total {
				return 0, fmt.Errorf("fetch: eof at %d of %d bytes", next, c.Total)
			}
			return c.Total, nil
		}
	}
}
