package api

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/server/export"
)

// The live stream (GET /api/v1/findings/stream) is Server-Sent Events fed by
// polling the store: every StreamPoll (500 ms) each connected stream asks
// for findings with id > the last it sent, with the caller's scope and
// filters as SQL conditions. This needs no hook in the ingest path, cannot
// miss a finding that was committed by another process or before a
// reconnect (the id is the cursor; SSE's Last-Event-ID or ?after= resumes,
// the later of the two when a reconnecting client sends both),
// and the scope is enforced by the same query code as the list. Its cost is
// one indexed query per stream per poll, which is small next to ingest at
// the expected number of consoles (MaxStreams bounds it). Latency from
// commit to the console is at most one poll interval plus the query.
//
// Events: "finding" (data: the finding JSON, id: its id), and a comment
// line every 15 s to keep proxies from closing an idle stream.
//
// The guard checks the bearer token once, when the stream opens; a stream
// lives for hours. So every poll checks the token again, with the same store
// call, and ends the stream when it no longer authenticates (the user was
// disabled) or no longer grants what the stream was opened with (role or
// scope). The client's reconnect then gets the 401 or 403. The cost is one
// lookup by a unique key per stream per poll.

const (
	streamBatch     = 500
	streamHeartbeat = 15 * time.Second
	streamWriteWait = 30 * time.Second
)

func (s *server) streamFindings(w http.ResponseWriter, r *http.Request, p *principal) error {
	q, err := query(r, append(findingFilterParams, "after")...)
	if err != nil {
		return err
	}
	f, err := findingFilter(q, p, time.Now())
	if err != nil {
		return err
	}
	// An SSE client reconnects to the URL it opened, ?after= included,
	// with Last-Event-ID: the last event it received. The later of the two
	// is where it stands (after alone would replay everything since).
	after, lastEvent := q.Get("after"), r.Header.Get("Last-Event-ID")
	for _, v := range []string{after, lastEvent} {
		if v == "" {
			continue
		}
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id < 0 {
			return errorf(http.StatusBadRequest, "invalid after / Last-Event-ID %q", v)
		}
		f.AfterID = max(f.AfterID, id)
	}
	if after == "" && lastEvent == "" {
		if f.AfterID, err = s.db.MaxFindingID(r.Context()); err != nil {
			return err
		}
	}
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		return errorf(http.StatusServiceUnavailable, "too many live streams; try again later")
	}
	f.Limit = streamBatch
	f.Ascending = true // the cursor is the largest id sent: oldest first, also from id 0
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		// ServeMux serves HEAD with the GET route. Its body is thrown away,
		// so a stream would never end while the connection stays open.
		return nil
	}
	bw := bufio.NewWriterSize(w, 16<<10)
	flush := func() error {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteWait)) // not every writer supports deadlines
		if err := bw.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	fmt.Fprintf(bw, "retry: 2000\n: vigil live findings after %d\n\n", f.AfterID)
	if err := flush(); err != nil {
		return nil // the client went away
	}
	ctx := r.Context()
	tick := time.NewTicker(s.opts.StreamPoll)
	defer tick.Stop()
	lastWrite := time.Now()
	for {
		for {
			fs, err := s.db.ListFindings(ctx, f)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("live stream query failed", "err", err)
				}
				return nil
			}
			for _, fi := range fs {
				b, err := json.Marshal(fi)
				if err != nil {
					s.log.Warn("live stream encode", "id", fi.ID, "err", err)
					continue
				}
				fmt.Fprintf(bw, "id: %d\nevent: finding\ndata: %s\n\n", fi.ID, b)
				f.AfterID = max(f.AfterID, fi.ID)
			}
			if len(fs) > 0 {
				if err := flush(); err != nil {
					return nil
				}
				lastWrite = time.Now()
			}
			if len(fs) < streamBatch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.opts.Shutdown: // nil: never
			return nil
		case <-tick.C:
		}
		if err := s.reauthorize(r, p, permRead); err != nil {
			if ctx.Err() == nil {
				s.log.Info("live stream closed: the caller is no longer authorized", "user", p.user.Name, "err", err)
			}
			return nil
		}
		if time.Since(lastWrite) >= streamHeartbeat {
			bw.WriteString(": ping\n\n")
			if err := flush(); err != nil {
				return nil
			}
			lastWrite = time.Now()
		}
	}
}

// reauthorize authenticates the bearer token of r again for a long-lived
// request opened by p with perm. It fails when the token no longer
// authenticates (ErrUnauthorized: user disabled) or when the user's role no
// longer grants perm or its scope changed (errForbidden): the request's
// filters were built for the old scope.
func (s *server) reauthorize(r *http.Request, p *principal, perm permission) error {
	now, err := s.authenticate(r)
	if err != nil {
		return fmt.Errorf("authenticate again: %w", err)
	}
	if now.user.ID != p.user.ID || !rolePerms[now.user.Role][perm] || now.scopeEntity() != p.scopeEntity() {
		return errForbidden
	}
	return nil
}

// MaxExport bounds the findings of one export request.
const MaxExport = 1_000_000

// exportFindings streams the findings matching the filters, oldest first,
// as JSON lines: format=jsonl (the API's finding JSON) or format=ocsf (OCSF
// Detection Finding, class 2004). ?after=ID continues an export; limit
// bounds it (default and maximum MaxExport). A store error after the status
// line aborts the response (the client sees a transfer error, never a clean
// end of a partial export).
func (s *server) exportFindings(w http.ResponseWriter, r *http.Request, p *principal) error {
	q, err := query(r, append(findingFilterParams, "format", "after", "limit")...)
	if err != nil {
		return err
	}
	f, err := findingFilter(q, p, time.Now())
	if err != nil {
		return err
	}
	format := q.Get("format")
	switch format {
	case "", "jsonl", "json":
		format = export.FormatJSON
	case export.FormatOCSF:
	default:
		return errorf(http.StatusBadRequest, "invalid format %q (jsonl or ocsf)", format)
	}
	if v := q.Get("after"); v != "" {
		if f.AfterID, err = strconv.ParseInt(v, 10, 64); err != nil || f.AfterID < 0 {
			return errorf(http.StatusBadRequest, "invalid after %q", v)
		}
	}
	limit := MaxExport
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > MaxExport {
			return errorf(http.StatusBadRequest, "invalid limit %q (1..%d)", v, MaxExport)
		}
	}
	f.Ascending = true
	// The first page is read before the status line, so that a store
	// failure is still a clean 500 rather than a truncated 200.
	f.Limit = min(1000, limit)
	fs, err := s.db.ListFindings(r.Context(), f)
	if err != nil {
		return err
	}
	name := "vigil-findings.jsonl"
	if format == export.FormatOCSF {
		name = "vigil-findings.ocsf.jsonl"
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil // headers only: the first page was read so that a store failure is still a 500
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	lw := export.NewLineWriter(bw, format)
	sent := 0
	for {
		for _, fi := range fs {
			if err := lw.Write(fi); err != nil {
				return nil // the client went away
			}
			f.AfterID = fi.ID
		}
		sent += len(fs)
		if len(fs) < f.Limit || sent >= limit {
			break
		}
		f.Limit = min(1000, limit-sent)
		if fs, err = s.db.ListFindings(r.Context(), f); err != nil {
			if errors.Is(err, r.Context().Err()) {
				break // the client went away
			}
			// A clean end would read as the whole export. The complete
			// lines written so far go out, then the response is aborted:
			// the client sees a transfer error and resumes with
			// ?after= the last id it read.
			s.log.Warn("export cut by a store error; response aborted", "after", f.AfterID, "err", err)
			_ = bw.Flush()
			panic(http.ErrAbortHandler)
		}
	}
	if err := bw.Flush(); err != nil && !strings.Contains(err.Error(), "closed") {
		s.log.Debug("export flush", "err", err)
	}
	return nil
}
