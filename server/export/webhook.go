package export

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/vigil-edge/vigil/server/store"
)

// webhookSender POSTs each batch as JSON lines (application/x-ndjson, one
// finding per line in the configured format). Headers sent:
//
//	X-Vigil-Batch: <first id>-<last id>   (same on a retry: receivers can dedupe)
//	X-Vigil-Timestamp: <unix seconds>
//	X-Vigil-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>  (with secret_file)
//
// A 2xx answer is delivery; anything else (or no answer) is retried with
// backoff, forever: findings are never skipped.
type webhookSender struct {
	fc      ForwarderConfig
	client  *http.Client
	secret  []byte
	headers http.Header
}

func newWebhookSender(fc ForwarderConfig) (*webhookSender, error) {
	s := &webhookSender{fc: fc, headers: http.Header{}}
	for k, v := range fc.Headers {
		if name, ok := strings.CutPrefix(v, "env:"); ok {
			v = os.Getenv(name)
			if v == "" {
				return nil, fmt.Errorf("header %s: environment variable %s is empty", k, name)
			}
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, fmt.Errorf("header %s: environment variable %s is not a valid header value", k, name)
			}
		}
		s.headers.Set(k, v)
	}
	if fc.SecretFile != "" {
		b, err := os.ReadFile(fc.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("read secret_file: %w", err)
		}
		s.secret = bytes.TrimSpace(b)
		if len(s.secret) < 16 {
			return nil, fmt.Errorf("secret_file %s: secret shorter than 16 bytes", fc.SecretFile)
		}
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS13}
	if fc.CAFile != "" {
		pemBytes, err := os.ReadFile(fc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate", fc.CAFile)
		}
		tc.RootCAs = pool
	}
	tr := &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true,
		TLSHandshakeTimeout: 10 * time.Second, MaxIdleConns: 2, IdleConnTimeout: 90 * time.Second}
	s.client = &http.Client{Transport: tr, Timeout: fc.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return s, nil
}

func (s *webhookSender) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

// Sign returns the X-Vigil-Signature value for a body sent at ts.
func Sign(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func (s *webhookSender) Send(ctx context.Context, fs []store.Finding) error {
	var body bytes.Buffer
	lw := NewLineWriter(&body, s.fc.Format)
	for _, f := range fs {
		if err := lw.Write(f); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.fc.URL, bytes.NewReader(body.Bytes()))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	for k, v := range s.headers {
		req.Header[k] = v
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("User-Agent", "vigil-server")
	req.Header.Set("X-Vigil-Batch", fmt.Sprintf("%d-%d", fs[0].ID, fs[len(fs)-1].ID))
	req.Header.Set("X-Vigil-Timestamp", ts)
	if s.secret != nil {
		req.Header.Set("X-Vigil-Signature", Sign(s.secret, ts, body.Bytes()))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// The client's *url.Error carries the full URL, whose query may
		// hold a secret (?token=...): the error is logged and kept in
		// Stats.LastError.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			ue.URL = redactURL(ue.URL)
		}
		return fmt.Errorf("post %s: %w", redactURL(s.fc.URL), err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("post %s: answered %s", redactURL(s.fc.URL), resp.Status)
	}
	return nil
}
