package lab

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// maxSessions bounds every client loop, whatever the duration.
const maxSessions = 100_000

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// httpClient is an HTTP(S) client whose connections start in h's namespace.
func (l *lab) httpClient(h *host) *http.Client {
	tr := &http.Transport{
		DialContext:         h.ns.dial,
		TLSClientConfig:     &tls.Config{RootCAs: l.pool, MinVersion: tls.VersionTLS13},
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     8 * time.Second, // sessions end; the next one reconnects
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func get(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 16<<20))
	return err
}

// resolve sends one DNS query from h to the lab resolver.
func (l *lab) resolve(ctx context.Context, h *host, name string, rng *rand.Rand) error {
	q, err := dnsQuery(uint16(rng.Uint32()), name)
	if err != nil {
		return err
	}
	c, err := h.ns.dial(ctx, "udp", netip.AddrPortFrom(l.hosts[1].addr, portDNS).String())
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(q); err != nil {
		return err
	}
	buf := make([]byte, 512)
	_, err = c.Read(buf)
	return err
}

// ntpPoll sends one NTP-like request from h.
func (l *lab) ntpPoll(ctx context.Context, h *host) error {
	c, err := h.ns.dial(ctx, "udp", netip.AddrPortFrom(l.hosts[1].addr, portNTP).String())
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	req := make([]byte, 48)
	req[0] = 0x23 // version 4, mode 3 (client)
	if _, err := c.Write(req); err != nil {
		return err
	}
	_, err = c.Read(req)
	return err
}

// client runs one benign host: sessions of browsing, API calls, downloads,
// uploads, fetches from the python server and scripted fetch loops,
// separated by think times, plus periodic jobs (NTP every ~16 s, an update
// check every ~30 s, a liveness ping every ~45 s, a backup upload every
// ~60 s).
func (l *lab) client(ctx context.Context, h *host, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0xc11e47))
	hc := l.httpClient(h)
	defer hc.CloseIdleConnections()
	web := l.hosts[0].addr.String()
	pyBase := fmt.Sprintf("http://%s:%d/", l.hosts[1].addr, portPyHTTP)
	var jobs sync.WaitGroup // Run waits for the periodic jobs too
	jobs.Go(func() { l.periodic(ctx, h, seed) })
	defer jobs.Wait()
	// Hosts start at different times.
	if !sleep(ctx, time.Duration(rng.IntN(3000))*time.Millisecond) {
		return
	}
	for i := 0; i < maxSessions && ctx.Err() == nil; i++ {
		var err error
		switch k := rng.IntN(10); {
		case k < 4: // browse: resolve, a page and its resources, think between pages
			_ = l.resolve(ctx, h, "web.lab", rng)
			for p, pages := 0, 1+rng.IntN(5); p < pages && err == nil; p++ {
				err = get(ctx, hc, fmt.Sprintf("http://%s/page/%d", web, rng.IntN(50)))
				for r := 0; r < rng.IntN(4) && err == nil; r++ {
					err = get(ctx, hc, fmt.Sprintf("http://%s/static/%d.css", web, r))
				}
				sleep(ctx, time.Duration(300+rng.IntN(2500))*time.Millisecond)
			}
		case k < 6: // HTTPS API calls
			for c, n := 0, 1+rng.IntN(6); c < n && err == nil; c++ {
				err = get(ctx, hc, fmt.Sprintf("https://%s/api/v1/items/%d", web, rng.IntN(1000)))
				sleep(ctx, time.Duration(100+rng.IntN(800))*time.Millisecond)
			}
		case k < 7 && rng.IntN(2) == 0: // file download
			err = get(ctx, hc, fmt.Sprintf("https://%s/files/%d", web, 50_000+rng.IntN(2_000_000)))
		case k < 7: // a script fetching files one by one, each on a new connection
			err = l.fetchLoop(ctx, h, rng)
		case k < 8: // upload
			body := bytes.NewReader(make([]byte, 10_000+rng.IntN(500_000)))
			req, rerr := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://%s/upload", web), body)
			if rerr == nil {
				var resp *http.Response
				if resp, err = hc.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		case k < 9 && l.pyHTTP: // python3 http.server: listing and a document
			if err = get(ctx, hc, pyBase); err == nil {
				err = get(ctx, hc, fmt.Sprintf("%sdoc%d.bin", pyBase, rng.IntN(3)))
			}
		default: // a lookup or two
			_ = l.resolve(ctx, h, fmt.Sprintf("host%d.lab", rng.IntN(20)), rng)
			err = l.resolve(ctx, h, "mail.example.org", rng)
		}
		if err != nil && ctx.Err() == nil {
			l.log.Debug("client session", "host", h.name, "err", err)
		}
		// Think time between sessions: mostly short, sometimes long.
		think := time.Duration(500+rng.IntN(3000)) * time.Millisecond
		if rng.IntN(5) == 0 {
			think += time.Duration(rng.IntN(8)) * time.Second
		}
		if !sleep(ctx, think) {
			return
		}
	}
}

// periodic runs the host's scheduled jobs.
func (l *lab) periodic(ctx context.Context, h *host, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x9e71))
	hc := l.httpClient(h)
	defer hc.CloseIdleConnections()
	start := time.Now()
	next := map[string]time.Duration{"ntp": time.Duration(rng.IntN(4000)) * time.Millisecond,
		"update": time.Duration(5000+rng.IntN(10_000)) * time.Millisecond, "backup": time.Duration(20+rng.IntN(30)) * time.Second,
		"ping": time.Duration(rng.IntN(20_000)) * time.Millisecond}
	period := map[string]time.Duration{"ntp": 16 * time.Second, "update": 30 * time.Second, "backup": 60 * time.Second, "ping": 45 * time.Second}
	for i := 0; i < maxSessions && ctx.Err() == nil; i++ {
		job, at := "", time.Duration(1<<62)
		for _, j := range []string{"ntp", "update", "backup", "ping"} {
			if next[j] < at {
				job, at = j, next[j]
			}
		}
		if !sleep(ctx, time.Until(start.Add(at))) {
			return
		}
		switch job {
		case "ntp":
			_ = l.ntpPoll(ctx, h)
		case "update":
			_ = l.resolve(ctx, h, "updates.lab", rng)
			_ = get(ctx, hc, fmt.Sprintf("https://%s/api/updates?host=%s", l.hosts[0].addr, h.name))
		case "ping":
			l.ping(ctx, h, rng)
		case "backup":
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://%s/upload", l.hosts[0].addr), bytes.NewReader(make([]byte, 200_000+rng.IntN(300_000))))
			if err == nil {
				if resp, err := hc.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}
		jitter := time.Duration(rng.IntN(1000)) * time.Millisecond
		next[job] += period[job] + jitter
	}
}

// fetchLoop is a script that fetches files one after another with a fresh
// curl each time (so a new TCP connection per file), sometimes resolving a
// name first, with short pauses: what mirror and update scripts, CI jobs and
// monitoring probes do. A third of them first check that the server answers
// with one to three pings ("ping -c 3 host && fetch"). Without curl, an HTTP
// client without keep-alives gives the same connections.
func (l *lab) fetchLoop(ctx context.Context, h *host, rng *rand.Rand) error {
	if rng.IntN(3) == 0 {
		l.pingHost(ctx, h, l.hosts[0].addr.String(), 1+rng.IntN(3))
	}
	curl, cerr := lookPath("curl")
	var hc *http.Client
	if cerr != nil {
		hc = l.httpClient(h)
		hc.Transport.(*http.Transport).DisableKeepAlives = true
		defer hc.CloseIdleConnections()
	}
	web := l.hosts[0].addr.String()
	for i, n := 0, 3+rng.IntN(18); i < n; i++ {
		if rng.IntN(2) == 0 {
			_ = l.resolve(ctx, h, fmt.Sprintf("mirror%d.lab", rng.IntN(4)), rng)
		}
		size := int(1000 * math.Exp2(8.2*rng.Float64())) // 1 KB to 300 KB, log-uniform
		url := fmt.Sprintf("http://%s/files/%d", web, size)
		if hc != nil {
			if err := get(ctx, hc, url); err != nil {
				return err
			}
		} else if out, err := h.ns.command(ctx, curl, curlArgs("-s", "-f", "-m", "20", "-o", "/dev/null", url)...).CombinedOutput(); err != nil {
			return fmt.Errorf("curl %s: %w: %s", url, err, lastLine(string(out)))
		}
		if !sleep(ctx, time.Duration(100+rng.IntN(600))*time.Millisecond) {
			return nil
		}
	}
	return nil
}

// curlArgs are curl's arguments for a lab request: no ~/.curlrc (-q,
// which must come first) and no proxy (--noproxy '*'): http_proxy and the
// like in the environment, which curl honours for numeric addresses too,
// would send the request to a proxy outside the lab instead of the lab host.
func curlArgs(args ...string) []string {
	return append([]string{"-q", "--noproxy", "*"}, args...)
}

// ping is a liveness check with iputils ping (one to three echo requests to
// the web or the infrastructure host), as monitoring agents and people do.
// Without ping it does nothing.
func (l *lab) ping(ctx context.Context, h *host, rng *rand.Rand) {
	if _, err := lookPath("ping"); err != nil {
		return
	}
	dst := l.hosts[rng.IntN(2)].addr.String()
	l.pingHost(ctx, h, dst, 1+rng.IntN(3))
}

// pingHost sends count echo requests from h to dst with iputils ping, 0.2 s
// apart. Without ping it does nothing.
func (l *lab) pingHost(ctx context.Context, h *host, dst string, count int) {
	ping, err := lookPath("ping")
	if err != nil {
		return
	}
	_ = h.ns.command(ctx, ping, "-n", "-q", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "1", dst).Run()
}
