// Package app is the composition root of vigil-server: it creates a
// deployment (Init: PKI, database, first admin token) and runs the server
// (Start/Run: store, QUIC endpoint for agents, HTTPS API for people and
// tools). Only server/cmd/vigil-server and server/servertest import it.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vigil-edge/vigil/internal/buildinfo"
	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/server/endpoint"
	"github.com/vigil-edge/vigil/server/export"
	"github.com/vigil-edge/vigil/server/store"
)

// Files in a server data directory, besides the PKI files of pki.Init.
const (
	DBFile         = "vigil.db"
	AdminTokenFile = "admin.token"
	BundlesDir     = "bundles"
)

// Default listen addresses.
const (
	DefaultQUICAddr = ":4433"
	DefaultAPIAddr  = "127.0.0.1:8443"
)

// InitOptions describe a new deployment.
type InitOptions struct {
	DataDir     string
	TrustDomain string   // "" = vigil.local
	DNSNames    []string // server certificate names; none and no IPs = the host name and localhost
	IPs         []net.IP // server certificate addresses; nil = 127.0.0.1 and ::1
	AdminName   string   // "" = admin
}

// InitResult is what Init created.
type InitResult struct {
	Pin            string // root CA pin for `vigil-agent enroll --ca-pin`
	CAFile         string
	AdminTokenFile string
}

// Init creates a deployment in opts.DataDir: the PKI (pki.Init), the SQLite
// database with its first admin user, whose API token goes to admin.token
// (0600), and the bundles directory. It refuses a directory that already
// holds a deployment.
func Init(ctx context.Context, opts InitOptions, log *slog.Logger) (InitResult, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.DataDir == "" {
		return InitResult{}, errors.New("init: no data directory")
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "vigil.local"
	}
	if opts.AdminName == "" {
		opts.AdminName = "admin"
	}
	if len(opts.DNSNames) == 0 && len(opts.IPs) == 0 {
		opts.DNSNames = []string{"localhost"}
		if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" && pki.ValidName(h) {
			opts.DNSNames = append([]string{h}, opts.DNSNames...)
		}
	}
	if opts.IPs == nil {
		opts.IPs = []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	}
	dbPath := filepath.Join(opts.DataDir, DBFile)
	tokPath := filepath.Join(opts.DataDir, AdminTokenFile)
	for _, p := range []string{dbPath, tokPath} {
		if _, err := os.Lstat(p); err == nil {
			return InitResult{}, fmt.Errorf("init %s: %w: %s exists", opts.DataDir, pki.ErrExists, filepath.Base(p))
		}
	}
	if err := pki.Init(opts.DataDir, opts.TrustDomain, opts.DNSNames, opts.IPs); err != nil {
		return InitResult{}, fmt.Errorf("init: %w", err)
	}
	ca, err := pki.LoadCA(opts.DataDir)
	if err != nil {
		return InitResult{}, fmt.Errorf("init: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(opts.DataDir, BundlesDir), 0o750); err != nil {
		return InitResult{}, fmt.Errorf("init: %w", err)
	}
	db, err := store.Open(ctx, dbPath, log)
	if err != nil {
		return InitResult{}, fmt.Errorf("init: %w", err)
	}
	defer db.Close()
	tok, err := db.CreateUser(ctx, opts.AdminName, store.RoleAdmin, "", "vigil-server init")
	if err != nil {
		return InitResult{}, fmt.Errorf("init: create admin user: %w", err)
	}
	if err := writeSecret(tokPath, []byte(tok+"\n")); err != nil {
		return InitResult{}, fmt.Errorf("init: %w", err)
	}
	log.Info("deployment created", "dir", opts.DataDir, "trust_domain", opts.TrustDomain,
		"dns", opts.DNSNames, "ca_pin", ca.Pin())
	return InitResult{Pin: ca.Pin(), CAFile: filepath.Join(opts.DataDir, pki.RootCertFile), AdminTokenFile: tokPath}, nil
}

// writeSecret creates path (mode 0600, must not exist) with data, synced.
func writeSecret(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Config configures a running server.
type Config struct {
	DataDir  string
	QUICAddr string // "" = DefaultQUICAddr
	APIAddr  string // "" = DefaultAPIAddr
	// PublicQUICAddr is the HOST:PORT agents use to reach the QUIC endpoint,
	// put into the enroll commands the API prints. "" = the bound address
	// when it names a host, else the API request's host name with port 4433.
	PublicQUICAddr string
	// ConfigFile is the server's YAML config file (optional): its
	// `forwarders:` list configures the SIEM exports (server/export).
	ConfigFile string
	Logger     *slog.Logger
	// Endpoint, when set, adjusts the endpoint's configuration before it
	// starts (tests shorten timeouts; CA, ServerCerts, Store, BundleDir,
	// Logger and Registerer are already filled in).
	Endpoint func(*endpoint.Config)
	// CertCheckInterval is how often the running server checks whether its
	// own certificate (server.pem) is due for renewal and, if so, renews it
	// and presents the new one from the next handshake on. Zero means
	// DefaultCertCheckInterval.
	CertCheckInterval time.Duration
	// Retention is how long findings are kept, counted from when the server
	// received them: older ones are deleted once at start and then every
	// RetentionInterval (retention.go). Zero keeps them for ever; otherwise
	// it must be at least MinRetention.
	Retention time.Duration
	// RetentionInterval is how often the retention job runs. Zero means
	// DefaultRetentionInterval.
	RetentionInterval time.Duration
}

// Server is a running vigil-server.
type Server struct {
	Store    *store.DB
	CA       *pki.CA
	Endpoint *endpoint.Endpoint
	Registry *prometheus.Registry

	log     *slog.Logger
	apiLn   net.Listener
	httpSrv *http.Server
	cancel  context.CancelFunc
	errc    chan error
	wg      sync.WaitGroup
	once    sync.Once
	stopErr error
	exports *export.Runner
	certs   *certRenewer // the served certificate (tests age it)
}

// Start opens the store and the CA in cfg.DataDir, and starts the QUIC
// endpoint and the HTTPS API on their addresses. It returns once both
// listen; Shutdown stops them.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("start server: no data directory")
	}
	if cfg.QUICAddr == "" {
		cfg.QUICAddr = DefaultQUICAddr
	}
	if cfg.APIAddr == "" {
		cfg.APIAddr = DefaultAPIAddr
	}
	if cfg.CertCheckInterval <= 0 {
		cfg.CertCheckInterval = DefaultCertCheckInterval
	}
	if err := validRetention(cfg.Retention); err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	if cfg.RetentionInterval <= 0 {
		cfg.RetentionInterval = DefaultRetentionInterval
	}
	ca, err := pki.LoadCA(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	// The server certificate is renewed here when it is due, and later by
	// the renewal loop; both listeners read it at each handshake.
	certs := newCertRenewer(ca, log.With("part", "pki"))
	if err := certs.start(ctx, time.Now()); err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	db, err := store.Open(ctx, filepath.Join(cfg.DataDir, DBFile), log.With("part", "store"))
	if err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	s := &Server{Store: db, CA: ca, log: log, errc: make(chan error, 2), certs: certs}
	defer func() {
		if err != nil {
			if s.apiLn != nil {
				s.apiLn.Close()
			}
			if s.Endpoint != nil {
				_ = s.Endpoint.Shutdown(context.Background())
			}
			db.Close()
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.Registry = reg
	if err := certs.register(reg); err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	var ret *retention
	if cfg.Retention > 0 {
		ret = newRetention(db, cfg.Retention, log.With("part", "retention"))
		if err := ret.register(reg); err != nil {
			return nil, fmt.Errorf("start server: %w", err)
		}
	}

	bundles := filepath.Join(cfg.DataDir, BundlesDir)
	if err := os.MkdirAll(bundles, 0o750); err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	ecfg := endpoint.Config{
		CA:          ca,
		ServerCerts: certs.certs,
		Store:       db,
		BundleDir:   bundles,
		Logger:      log.With("part", "endpoint"),
		Registerer:  reg,
	}
	models := newRegistry(db, cfg, log.With("part", "registry"), reg)
	wireRegistry(models, &ecfg)
	if cfg.Endpoint != nil {
		cfg.Endpoint(&ecfg)
	}
	ep, err := endpoint.New(ctx, ecfg)
	if err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	s.Endpoint = ep
	if err := ep.Listen(cfg.QUICAddr); err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}

	stop := make(chan struct{})
	// healthz warns of a server certificate that keeps failing to renew.
	handler, err := newAPIHandler(db, ep, reg, cfg, log.With("part", "api"), ca.Pin(), stop,
		func() []string { return certs.health(time.Now()) })
	if err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	handler = registryHandler(models, ep, handler)
	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return nil, fmt.Errorf("start server: listen api %s: %w", cfg.APIAddr, err)
	}
	s.apiLn = ln
	s.httpSrv = &http.Server{
		Handler:           bodyDeadline(handler),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: certs.certs.Get},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.With("part", "http").Handler(), slog.LevelWarn),
	}
	s.httpSrv.RegisterOnShutdown(func() { close(stop) })

	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	if cfg.ConfigFile != "" {
		xcfg, err := export.LoadConfig(cfg.ConfigFile)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("start server: %w", err)
		}
		if s.exports, err = export.Start(sctx, db, xcfg, log.With("part", "export")); err != nil {
			cancel()
			return nil, fmt.Errorf("start server: %w", err)
		}
	}
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		certs.run(sctx, cfg.CertCheckInterval)
	}()
	if ret != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			ret.run(sctx, cfg.RetentionInterval)
		}()
		log.Info("findings retention on", "retention", cfg.Retention.String(), "interval", cfg.RetentionInterval.String())
	} else {
		log.Info("findings retention off: findings are kept for ever (--retention)")
	}
	go func() {
		defer s.wg.Done()
		if err := ep.Serve(sctx); err != nil {
			s.errc <- fmt.Errorf("quic endpoint: %w", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("api: %w", err)
		}
	}()
	log.Info("vigil-server running", "version", buildinfo.Version, "quic", ep.Addr().String(),
		"api", "https://"+ln.Addr().String(), "data", cfg.DataDir, "trust_domain", ca.TrustDomain, "ca_pin", ca.Pin())
	return s, nil
}

// QUICAddr is the UDP address agents connect to.
func (s *Server) QUICAddr() net.Addr { return s.Endpoint.Addr() }

// APIAddr is the TCP address of the HTTPS API.
func (s *Server) APIAddr() net.Addr { return s.apiLn.Addr() }

// Err reports a listener that failed while running.
func (s *Server) Err() <-chan error { return s.errc }

// Shutdown stops the server: no new connections, in-flight findings commits
// finish and are acknowledged, agents are told CodeShuttingDown, the API
// drains its requests, then the store closes. ctx bounds the wait.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		var errs []error
		if err := s.Endpoint.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("api shutdown: %w", err))
		}
		s.cancel()
		s.wg.Wait()
		if s.exports != nil {
			s.exports.Stop()
		}
		if err := s.Store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close store: %w", err))
		}
		s.stopErr = errors.Join(errs...)
		s.log.Info("vigil-server stopped")
	})
	return s.stopErr
}

// Run starts the server and serves until ctx ends (SIGINT/SIGTERM in the
// main), then shuts it down within 30 seconds.
func Run(ctx context.Context, cfg Config) error {
	s, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	var runErr error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down")
	case runErr = <-s.Err():
		s.log.Error("server failed; shutting down", "err", runErr)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return errors.Join(runErr, s.Shutdown(sctx))
}

// bodyReadIdle bounds each read of a request body, and the server's drain of
// a body the handler left unread.
var bodyReadIdle = 30 * time.Second

// bodyDeadline puts a read deadline on requests with a body: without it (the
// server has no ReadTimeout, which would cut live streams and exports), a
// client announcing a body and sending none held its connection for good,
// authenticated or not. Each read of the body extends the deadline (a large
// bundle upload is not cut), and the end of the body lifts it.
func bodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			if rc.SetReadDeadline(time.Now().Add(bodyReadIdle)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, left: r.ContentLength}
			}
		}
		next.ServeHTTP(w, r)
	})
}

type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	left int64 // bytes of the announced length not read yet; -1: unknown
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(bodyReadIdle))
	n, err := b.ReadCloser.Read(p)
	if b.left > 0 {
		b.left -= int64(n)
	}
	// A JSON decoder stops at the end of its value, before EOF: the whole
	// announced length read lifts the deadline too (otherwise a handler
	// still running when it passes would see its context cancelled).
	if errors.Is(err, io.EOF) || b.left == 0 {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
