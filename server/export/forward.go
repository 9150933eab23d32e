package export

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// Source is what the forwarders need from the store; *store.DB implements it.
type Source interface {
	ListFindings(ctx context.Context, f store.FindingFilter) ([]store.Finding, error)
	MaxFindingID(ctx context.Context) (int64, error)
	ForwarderCursor(ctx context.Context, name string) (int64, error)
	SetForwarderCursor(ctx context.Context, name string, lastID int64) error
	InitForwarderCursor(ctx context.Context, name string, lastID int64) (int64, error)
}

var _ Source = (*store.DB)(nil)

// sender delivers one batch of findings; nil means delivered (see the
// package doc for what that means per transport).
type sender interface {
	Send(ctx context.Context, fs []store.Finding) error
	Close() error
}

// Runner runs the configured forwarders.
type Runner struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	stats map[string]*Stats
}

// Stats are a forwarder's counters since start.
type Stats struct {
	Cursor    int64     `json:"cursor"`
	Delivered uint64    `json:"delivered"` // findings in batches delivered
	Failures  uint64    `json:"failures"`  // failed delivery attempts
	LastError string    `json:"last_error,omitempty"`
	LastOK    time.Time `json:"last_ok,omitzero"`
}

// Start validates cfg, builds every forwarder and runs each in its own
// goroutine until ctx ends or Stop is called. A forwarder that cannot
// deliver keeps retrying with backoff (it never skips findings). Start
// fails only on configuration errors (bad files, certificates).
//
// server/app calls it once after opening the store:
//
//	cfg, err := export.LoadConfig(path) // the server config file
//	r, err := export.Start(ctx, db, cfg, log.With("part", "export"))
//	defer r.Stop()
func Start(ctx context.Context, db Source, cfg Config, log *slog.Logger) (*Runner, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("start forwarders: %w", err)
	}
	senders := make([]sender, len(cfg.Forwarders))
	for i, fc := range cfg.Forwarders {
		var err error
		switch fc.Type {
		case "syslog":
			senders[i], err = newSyslogSender(fc)
		case "webhook":
			senders[i], err = newWebhookSender(fc)
		}
		if err != nil {
			for _, s := range senders[:i] {
				s.Close()
			}
			return nil, fmt.Errorf("start forwarder %s: %w", fc.Name, err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &Runner{cancel: cancel, stats: map[string]*Stats{}}
	// Every forwarder's counters exist before the first goroutine reads the
	// map (update, under r.mu): filled in the loop below, the map was
	// written while the forwarders started before read it.
	for _, fc := range cfg.Forwarders {
		r.stats[fc.Name] = &Stats{}
	}
	for i, fc := range cfg.Forwarders {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer senders[i].Close()
			r.run(ctx, db, fc, senders[i], log.With("forwarder", fc.Name, "type", fc.Type))
		}()
		log.Info("forwarder started", "forwarder", fc.Name, "type", fc.Type, "network", fc.Network, "address", fc.Address,
			"url", redactURL(fc.URL), "format", fc.Format)
	}
	return r, nil
}

// Stop stops every forwarder and waits for them. A batch in flight is
// given up to DrainTimeout (or the forwarder's own timeout, if shorter) to
// be confirmed and its cursor stored, so that an orderly restart sends
// nothing twice; a batch still unconfirmed then is sent again after the
// next start (at least once: the receiver may have read part of it).
func (r *Runner) Stop() {
	r.cancel()
	r.wg.Wait()
}

// Stats returns a copy of each forwarder's counters, by name.
func (r *Runner) Stats() map[string]Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]Stats, len(r.stats))
	for k, v := range r.stats {
		out[k] = *v
	}
	return out
}

func (r *Runner) update(name string, fn func(*Stats)) {
	r.mu.Lock()
	fn(r.stats[name])
	r.mu.Unlock()
}

// backoff returns the delay before retry n (1, 2, ...): exponential from
// 500ms, capped, with jitter.
func backoff(n int, cap time.Duration) time.Duration {
	d := 500 * time.Millisecond << min(n-1, 20)
	if d > cap || d <= 0 {
		d = cap
	}
	return d/2 + rand.N(d/2+1)
}

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

// DrainTimeout bounds how long Stop waits for a batch in flight.
const DrainTimeout = 10 * time.Second

func (r *Runner) run(ctx context.Context, db Source, fc ForwarderConfig, s sender, log *slog.Logger) {
	var sev store.FindingFilter
	if fc.MinSeverity != "" {
		sev.MinSeverity, _ = store.ParseSeverity(fc.MinSeverity) // validated
	}
	// The cursor: where this forwarder stands. Retry the store until it
	// answers: nothing may be forwarded from a guessed position. "now"
	// applies only to a forwarder without a stored cursor: a stored 0 (set
	// on an empty store) is kept, or the findings that arrived since and
	// are not delivered yet would be skipped.
	var cursor int64
	for attempt := 1; ; attempt++ {
		c, err := db.ForwarderCursor(ctx, fc.Name)
		if err == nil && c == 0 && fc.Start == "now" {
			if c, err = db.MaxFindingID(ctx); err == nil {
				c, err = db.InitForwarderCursor(ctx, fc.Name, c)
			}
		}
		if err == nil {
			cursor = c
			break
		}
		log.Warn("read forwarder cursor", "err", err)
		if !sleep(ctx, backoff(attempt, fc.MaxBackoff)) {
			return
		}
	}
	r.update(fc.Name, func(st *Stats) { st.Cursor = cursor })
	failures := 0
	// retry is a batch whose delivery failed: it is sent again exactly as
	// it was (same findings, same X-Vigil-Batch), not read again, when it
	// may have grown, so that a receiver can recognise it.
	var retry []store.Finding
	for ctx.Err() == nil {
		fs := retry
		if fs == nil {
			var err error
			fs, err = db.ListFindings(ctx, store.FindingFilter{Entity: fc.Entity, MinSeverity: sev.MinSeverity,
				AfterID: cursor, Ascending: true, Limit: fc.Batch})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Warn("read findings", "err", err)
				sleep(ctx, fc.Interval)
				continue
			}
			if len(fs) == 0 {
				sleep(ctx, fc.Interval)
				continue
			}
		}
		// The send is not cut by Stop: a batch handed to the receiver
		// is finished and its cursor stored (bounded by DrainTimeout once
		// stopping), or an orderly restart would deliver it twice.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fc.Timeout)
		stopDrain := context.AfterFunc(ctx, func() {
			time.AfterFunc(DrainTimeout, cancel)
		})
		err := s.Send(sctx, fs)
		stopDrain()
		cancel()
		if err != nil {
			retry = fs
			if ctx.Err() != nil {
				log.Warn("stopping with a batch unconfirmed; it is sent again after the next start", "first_id", fs[0].ID,
					"n", len(fs), "err", err)
				return
			}
			failures++
			lvl := slog.LevelWarn
			if failures >= 5 {
				lvl = slog.LevelError
			}
			log.Log(ctx, lvl, "delivery failed; will retry the same findings", "first_id", fs[0].ID, "n", len(fs),
				"attempt", failures, "err", err)
			r.update(fc.Name, func(st *Stats) { st.Failures++; st.LastError = err.Error() })
			sleep(ctx, backoff(failures, fc.MaxBackoff))
			continue
		}
		retry = nil
		last := fs[len(fs)-1].ID
		// Record the cursor; retry until it is stored (a failure here means
		// the batch is sent again after a restart: a duplicate, not a loss).
		for attempt := 1; ; attempt++ {
			err := db.SetForwarderCursor(context.WithoutCancel(ctx), fc.Name, last)
			if err == nil {
				break
			}
			log.Warn("store forwarder cursor", "err", err)
			if !sleep(ctx, backoff(attempt, fc.MaxBackoff)) {
				return
			}
		}
		if failures > 0 {
			log.Info("delivery recovered", "after_attempts", failures)
		}
		failures = 0
		cursor = last
		r.update(fc.Name, func(st *Stats) {
			st.Cursor, st.Delivered, st.LastOK, st.LastError = last, st.Delivered+uint64(len(fs)), time.Now(), ""
		})
		if len(fs) < fc.Batch {
			sleep(ctx, fc.Interval)
		}
	}
}

// redactURL drops a URL's query and credentials for logs.
func redactURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
