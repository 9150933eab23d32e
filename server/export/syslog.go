package export

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vigil-edge/vigil/server/store"
)

// syslogSeverity maps a finding's severity to an RFC 5424 severity.
func syslogSeverity(s string) int {
	switch s {
	case "critical":
		return 2 // Critical
	case "high":
		return 3 // Error
	case "medium":
		return 4 // Warning
	case "low":
		return 5 // Notice
	}
	return 6 // Informational
}

// sdEscape escapes an SD-PARAM value (RFC 5424 section 6.3.3).
func sdEscape(s string) string {
	if !strings.ContainsAny(s, `"\]`) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if r == '"' || r == '\\' || r == ']' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// SyslogMessage formats one finding as an RFC 5424 message: PRI from the
// facility and the finding's severity, the finding's time as TIMESTAMP,
// MSGID "finding", structured data [sdID id=... uid=... entity=... agent=...
// detector=... severity=... score=... status=...], and the finding (format
// json or ocsf) as MSG, cut to maxLen bytes in total.
func SyslogMessage(f store.Finding, format string, facility int, hostname, appName, sdID string, maxLen int) ([]byte, error) {
	body, err := Marshal(f, format)
	if err != nil {
		return nil, err
	}
	if hostname == "" {
		hostname = "-"
	}
	ts := "-"
	if !f.Time.IsZero() {
		ts = f.Time.UTC().Format("2006-01-02T15:04:05.000000Z")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<%d>1 %s %s %s - finding [%s id=\"%d\" uid=\"%s\" entity=\"%s\" agent=\"%s\" detector=\"%s\" severity=\"%s\" score=\"%s\" status=\"%s\"] ",
		facility*8+syslogSeverity(f.Severity), ts, hostname, appName, sdID, f.ID, sdEscape(FindingUID(f)), sdEscape(f.Entity),
		sdEscape(f.AgentID), sdEscape(f.Detector), sdEscape(f.Severity), strconv.FormatFloat(f.Score, 'g', 6, 64), sdEscape(f.Status))
	b.Write(body)
	msg := []byte(b.String())
	if len(msg) > maxLen {
		// Cut on a rune boundary; the SIEM gets the header and the start.
		cut := maxLen
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	return msg, nil
}

type syslogSender struct {
	fc       ForwarderConfig
	facility int
	hostname string
	tls      *tls.Config
	udp      net.Conn // kept open between batches
}

func newSyslogSender(fc ForwarderConfig) (*syslogSender, error) {
	s := &syslogSender{fc: fc, facility: facilities[fc.Facility], hostname: fc.Hostname}
	if s.hostname == "" {
		if h, err := os.Hostname(); err == nil && printASCII(h, 255) {
			s.hostname = h
		}
	}
	if fc.Network == "tls" {
		host, _, _ := net.SplitHostPort(fc.Address)
		c := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: host}
		if fc.ServerName != "" {
			c.ServerName = fc.ServerName
		}
		if fc.CAFile != "" {
			pemBytes, err := os.ReadFile(fc.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pemBytes) {
				return nil, fmt.Errorf("ca_file %s: no PEM certificate", fc.CAFile)
			}
			c.RootCAs = pool
		}
		if fc.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(fc.CertFile, fc.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("load client certificate: %w", err)
			}
			c.Certificates = []tls.Certificate{cert}
		}
		s.tls = c
	}
	return s, nil
}

func (s *syslogSender) Close() error {
	if s.udp != nil {
		return s.udp.Close()
	}
	return nil
}

func (s *syslogSender) messages(fs []store.Finding) ([][]byte, error) {
	out := make([][]byte, 0, len(fs))
	for _, f := range fs {
		m, err := SyslogMessage(f, s.fc.Format, s.facility, s.hostname, s.fc.AppName, s.fc.SDID, s.fc.MaxMessage)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func (s *syslogSender) Send(ctx context.Context, fs []store.Finding) error {
	msgs, err := s.messages(fs)
	if err != nil {
		return err
	}
	if s.fc.Network == "udp" {
		return s.sendUDP(ctx, msgs)
	}
	return s.sendStream(ctx, msgs)
}

// sendUDP sends one datagram per message (RFC 5426). Best effort: an ICMP
// "port unreachable" from a previous datagram surfaces as an error on a
// later write, which makes the batch go again, but loss in the network is
// not detected.
func (s *syslogSender) sendUDP(ctx context.Context, msgs [][]byte) error {
	if s.udp == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, "udp", s.fc.Address)
		if err != nil {
			return fmt.Errorf("dial udp %s: %w", s.fc.Address, err)
		}
		s.udp = c
	}
	deadline, _ := ctx.Deadline()
	_ = s.udp.SetWriteDeadline(deadline)
	for _, m := range msgs {
		if _, err := s.udp.Write(m); err != nil {
			s.udp.Close()
			s.udp = nil
			return fmt.Errorf("send udp %s: %w", s.fc.Address, err)
		}
	}
	return nil
}

// sendStream delivers the batch over its own TCP (or TLS) connection with
// octet-counting framing ("LEN SP MSG", RFC 5425 / RFC 6587), then closes
// the sending side and waits for the receiver to close its side: a clean
// end of stream from the receiver means it has read every byte we sent.
func (s *syslogSender) sendStream(ctx context.Context, msgs [][]byte) error {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", s.fc.Address)
	if err != nil {
		return fmt.Errorf("dial %s: %w", s.fc.Address, err)
	}
	defer raw.Close()
	tcp, _ := raw.(*net.TCPConn)
	if deadline, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var w io.Writer = raw
	var tc *tls.Conn
	if s.tls != nil {
		tc = tls.Client(raw, s.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("tls handshake with %s: %w", s.fc.Address, err)
		}
		w = tc
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	for _, m := range msgs {
		bw.WriteString(strconv.Itoa(len(m)))
		bw.WriteByte(' ')
		bw.Write(m)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("send to %s: %w", s.fc.Address, err)
	}
	if tc != nil {
		if err := tc.CloseWrite(); err != nil { // close_notify
			return fmt.Errorf("close tls write side to %s: %w", s.fc.Address, err)
		}
	}
	if tcp != nil {
		if err := tcp.CloseWrite(); err != nil { // FIN
			return fmt.Errorf("close write side to %s: %w", s.fc.Address, err)
		}
	}
	// Wait for the receiver's end of stream; whatever it sends meanwhile is
	// dropped. Over TLS it is read through TLS (session tickets, its
	// close_notify): in TLS 1.3 our handshake ends before the receiver has
	// checked our certificate, and its refusal is an alert that must fail
	// the batch, not an end of stream that confirms it.
	var answer io.Reader = raw
	if tc != nil {
		answer = tc
	}
	if _, err := io.Copy(io.Discard, answer); err != nil {
		return fmt.Errorf("await receiver close from %s (batch not confirmed): %w", s.fc.Address, err)
	}
	return nil
}

// ParseSyslogFrames splits an octet-counted stream ("LEN SP MSG"...) into
// messages. It is the receiving side of sendStream, for tests and tools.
func ParseSyslogFrames(r *bufio.Reader, max int) ([][]byte, error) {
	var out [][]byte
	for {
		n, err := readFrameLen(r)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if n < 1 || n > max {
			return out, fmt.Errorf("frame length %d out of 1..%d", n, max)
		}
		m := make([]byte, n)
		if _, err := io.ReadFull(r, m); err != nil {
			return out, fmt.Errorf("frame of %d bytes: %w", n, err)
		}
		out = append(out, m)
	}
}

func readFrameLen(r *bufio.Reader) (int, error) {
	n, digits := 0, 0
	for {
		c, err := r.ReadByte()
		if err != nil {
			if digits > 0 && errors.Is(err, io.EOF) {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if c == ' ' && digits > 0 {
			return n, nil
		}
		if c < '0' || c > '9' || digits >= 8 {
			return 0, fmt.Errorf("bad frame length byte %q", c)
		}
		n = n*10 + int(c-'0')
		digits++
	}
}

// SyslogHeader is the parsed header of an RFC 5424 message.
type SyslogHeader struct {
	Pri                                  int
	Timestamp, Hostname, AppName, ProcID string
	MsgID                                string
	SDID                                 string
	Params                               map[string]string
	Msg                                  []byte
}

// ParseSyslogMessage parses an RFC 5424 message with at most one SD
// element (what SyslogMessage writes).
func ParseSyslogMessage(m []byte) (SyslogHeader, error) {
	var h SyslogHeader
	s := string(m)
	if !strings.HasPrefix(s, "<") {
		return h, errors.New("no PRI")
	}
	end := strings.IndexByte(s, '>')
	if end < 2 || end > 4 {
		return h, errors.New("bad PRI")
	}
	pri, err := strconv.Atoi(s[1:end])
	if err != nil || pri < 0 || pri > 191 {
		return h, errors.New("bad PRI value")
	}
	h.Pri = pri
	s = s[end+1:]
	f := strings.SplitN(s, " ", 7)
	if len(f) < 7 || f[0] != "1" {
		return h, errors.New("bad header: want VERSION 1 and 6 fields")
	}
	h.Timestamp, h.Hostname, h.AppName, h.ProcID, h.MsgID = f[1], f[2], f[3], f[4], f[5]
	if h.Timestamp != "-" {
		if _, err := time.Parse(time.RFC3339Nano, h.Timestamp); err != nil {
			return h, fmt.Errorf("bad TIMESTAMP: %w", err)
		}
	}
	rest := f[6]
	if strings.HasPrefix(rest, "-") {
		h.Msg = []byte(strings.TrimPrefix(strings.TrimPrefix(rest, "-"), " "))
		return h, nil
	}
	if !strings.HasPrefix(rest, "[") {
		return h, errors.New("bad STRUCTURED-DATA")
	}
	i := 1
	sp := strings.IndexAny(rest[i:], " ]")
	if sp < 0 {
		return h, errors.New("unterminated SD element")
	}
	h.SDID = rest[i : i+sp]
	i += sp
	h.Params = map[string]string{}
	for i < len(rest) && rest[i] == ' ' {
		i++
		eq := strings.IndexByte(rest[i:], '=')
		if eq < 1 || i+eq+1 >= len(rest) || rest[i+eq+1] != '"' {
			return h, errors.New("bad SD-PARAM")
		}
		name := rest[i : i+eq]
		i += eq + 2
		var v strings.Builder
		for {
			if i >= len(rest) {
				return h, errors.New("unterminated SD-PARAM value")
			}
			c := rest[i]
			if c == '\\' && i+1 < len(rest) && strings.ContainsRune(`"\]`, rune(rest[i+1])) {
				v.WriteByte(rest[i+1])
				i += 2
				continue
			}
			if c == '"' {
				i++
				break
			}
			v.WriteByte(c)
			i++
		}
		h.Params[name] = v.String()
	}
	if i >= len(rest) || rest[i] != ']' {
		return h, errors.New("SD element not closed")
	}
	i++
	if i < len(rest) && rest[i] == ' ' {
		i++
	}
	h.Msg = []byte(rest[i:])
	return h, nil
}
