package lab

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Service ports of the lab.
const (
	portHTTP   = 80
	portHTTPS  = 443
	portDNS    = 53
	portNTP    = 123
	portPyHTTP = 8000
	portSSH    = 22
)

// webHandler serves pages, downloads of a chosen size, uploads, a C2-like
// check-in path (the beacon attack) and a small web application with
// logins (/login gives a session cookie, /account needs one: the sidejack
// attack).
func webHandler() http.Handler {
	mux := http.NewServeMux()
	page := make([]byte, 64<<10)
	for i := range page {
		page[i] = "abcdefghijklmnopqrstuvwxyz <>/\n"[i%31]
	}
	var smu sync.Mutex
	sessions := map[string]bool{}
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		var b [16]byte
		_, _ = rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		smu.Lock()
		if len(sessions) < 10000 {
			sessions[id] = true
		}
		smu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: "SESSIONID", Value: id, Path: "/", HttpOnly: true})
		fmt.Fprintln(w, "welcome")
	})
	mux.HandleFunc("/account", func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie("SESSIONID")
		smu.Lock()
		ok := err == nil && sessions[c.Value]
		smu.Unlock()
		if !ok {
			http.Error(w, "login first", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write(page[:3000])
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := 2000 + len(r.URL.Path)*300
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write(page[:min(n, len(page))])
	})
	mux.HandleFunc("/files/", func(w http.ResponseWriter, r *http.Request) {
		size, err := strconv.Atoi(filepath.Base(r.URL.Path))
		if err != nil || size < 0 || size > 8<<20 {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		for size > 0 {
			k := min(size, len(page))
			if _, err := w.Write(page[:k]); err != nil {
				return
			}
			size -= k
		}
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 16<<20))
		fmt.Fprintf(w, "stored %d bytes\n", n)
	})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"time":%q}`, r.URL.Path, time.Now().UTC().Format(time.RFC3339))
	})
	return mux
}

// selfSigned makes the lab web server's certificate (ECDSA P-256, for its
// address) and a pool trusting it.
func selfSigned(addr netip.Addr) (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("lab key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "web.lab"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"web.lab"}, IPAddresses: []net.IP{addr.AsSlice()},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("lab certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("lab certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool, nil
}

// serveNTP answers 48-byte NTP-like requests with a server-mode packet
// carrying the time.
func serveNTP(c net.PacketConn) {
	buf := make([]byte, 512)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		if n < 48 {
			continue
		}
		r := make([]byte, 48)
		r[0] = 0x24 // LI 0, version 4, mode 4 (server)
		r[1] = 2    // stratum
		copy(r[24:32], buf[40:48])
		secs := uint64(time.Now().Unix()) + 2208988800
		for i := range 8 {
			r[40+i] = byte(secs >> (56 - 8*i))
		}
		_, _ = c.WriteTo(r, from)
	}
}

// startServers starts the services of the server hosts; it returns what was
// skipped (tools absent) and a stop function.
func (l *lab) startServers(ctx context.Context) error {
	web, infra := l.hosts[0], l.hosts[1]
	cert, pool, err := selfSigned(web.addr)
	if err != nil {
		return err
	}
	l.pool = pool
	h := webHandler()
	for _, s := range []struct {
		port int
		tls  bool
	}{{portHTTP, false}, {portHTTPS, true}} {
		ln, err := web.ns.listen("tcp", netip.AddrPortFrom(web.addr, uint16(s.port)).String())
		if err != nil {
			return fmt.Errorf("web server: %w", err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		if s.tls {
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
			ln = tls.NewListener(ln, srv.TLSConfig)
		}
		l.closers = append(l.closers, srv.Close)
		go func() { _ = srv.Serve(ln) }()
	}
	dns, err := infra.ns.listenPacket("udp", netip.AddrPortFrom(infra.addr, portDNS).String())
	if err != nil {
		return fmt.Errorf("dns server: %w", err)
	}
	l.closers = append(l.closers, dns.Close)
	go serveDNS(dns, web.addr)
	ntp, err := infra.ns.listenPacket("udp", netip.AddrPortFrom(infra.addr, portNTP).String())
	if err != nil {
		return fmt.Errorf("ntp server: %w", err)
	}
	l.closers = append(l.closers, ntp.Close)
	go serveNTP(ntp)

	// Debian's own servers where installed.
	if py, err := lookPath("python3"); err == nil {
		dir, err := tempDir("www")
		if err != nil {
			return fmt.Errorf("www dir: %w", err)
		}
		l.tmpDirs = append(l.tmpDirs, dir)
		for i, size := range []int{4 << 10, 120 << 10, 900 << 10} {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("doc%d.bin", i)), make([]byte, size), 0o644); err != nil {
				return fmt.Errorf("www dir: %w", err)
			}
		}
		cmd := infra.ns.command(ctx, py, "-m", "http.server", strconv.Itoa(portPyHTTP), "--bind", infra.addr.String(), "--directory", dir)
		if err := cmd.Start(); err != nil {
			l.note("python3 http.server not started: %v", err)
		} else {
			l.procs = append(l.procs, cmd)
			l.pyHTTP = true
		}
	} else {
		l.note("python3 not installed: no python3 -m http.server on the infra host")
	}
	if sshd, err := lookPath("sshd"); err == nil {
		if err := l.startSSHD(ctx, infra, sshd); err != nil {
			l.note("sshd not started: %v", err)
		}
	} else {
		l.note("openssh-server not installed: no SSH server (and no hydra attack target)")
	}
	return nil
}

// startSSHD runs Debian's sshd on the infra host with a throwaway host key
// and a config that allows no login at all (password authentication is
// offered so that hydra has something to knock on).
func (l *lab) startSSHD(ctx context.Context, h *host, sshd string) error {
	dir, err := tempDir("ssh")
	if err != nil {
		return err
	}
	l.tmpDirs = append(l.tmpDirs, dir)
	keygen, err := lookPath("ssh-keygen")
	if err != nil {
		return err
	}
	key := filepath.Join(dir, "host_ed25519")
	if out, err := execOutput(ctx, keygen, "-q", "-t", "ed25519", "-N", "", "-f", key); err != nil {
		return fmt.Errorf("ssh-keygen: %w: %s", err, out)
	}
	cfg := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf("ListenAddress %s\nPort %d\nHostKey %s\nPidFile %s\nPermitRootLogin no\nAllowUsers nobody-in-the-lab\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM no\nMaxAuthTries 3\nMaxStartups 100\n",
		h.addr, portSSH, key, filepath.Join(dir, "sshd.pid"))
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return err
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return err
	}
	cmd := h.ns.command(ctx, sshd, "-D", "-e", "-f", cfg)
	if err := cmd.Start(); err != nil {
		return err
	}
	l.procs = append(l.procs, cmd)
	l.ssh = true
	return nil
}
