package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// maxCountedPaths bounds the request counts: a scanner walking random paths
// must not grow them without end. Paths past the bound count as "other".
const maxCountedPaths = 1000

// service is the observable service: its state, metrics and handlers.
type service struct {
	log     *slog.Logger
	started time.Time
	state   *modeState
	metrics *metrics
	counts  requestCounts
	conns   atomic.Uint64
	backlog atomic.Int64
	hanging atomic.Int64 // also in a gauge, but /metrics itself hangs in mode hang

	// quit is closed when shutdown starts, to release hung and delayed
	// requests, which http.Server.Shutdown would otherwise wait for.
	quit      chan struct{}
	closeOnce sync.Once
}

func newService(cfg config, log *slog.Logger) *service {
	now := time.Now()
	s := &service{
		log:     log,
		started: now,
		state:   newModeState(cfg.mode, cfg.latency, cfg.flapPeriod, now),
		metrics: newMetrics(),
		counts:  requestCounts{m: map[string]uint64{}},
		quit:    make(chan struct{}),
	}
	s.metrics.setMode(cfg.mode)
	return s
}

// close releases every request held by a mode or a latency.
func (s *service) close() {
	s.closeOnce.Do(func() { close(s.quit) })
}

// handler routes every endpoint. Counting comes first, before any mode or
// latency, so that /control/counts tells how many requests arrived even when
// they are never answered.
func (s *service) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", s.observed(http.HandlerFunc(s.healthz)))
	mux.Handle("GET /metrics", s.observed(s.unlessFailing(promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{
		Registry: s.metrics.registry,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}))))
	mux.Handle("GET /api/status", s.observed(http.HandlerFunc(s.status)))
	mux.HandleFunc("POST /control/mode", s.controlMode)
	mux.HandleFunc("POST /control/latency", s.controlLatency)
	mux.HandleFunc("POST /control/flap", s.controlFlap)
	mux.HandleFunc("POST /control/backlog", s.controlBacklog)
	mux.HandleFunc("GET /control/state", s.controlState)
	mux.HandleFunc("GET /control/counts", s.controlCounts)
	mux.HandleFunc("GET /control/connections", s.controlConnections)
	mux.HandleFunc("POST /control/reset", s.controlReset)
	return s.count(s.instrument(mux))
}

// connState counts accepted connections: that is all a tcp observer does.
func (s *service) connState(_ net.Conn, st http.ConnState) {
	if st == http.StateNew {
		s.conns.Add(1)
	}
}

// count counts every request on arrival, except the control API, whose own
// requests would otherwise blur what the tests assert.
func (s *service) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p != "/control" && !strings.HasPrefix(p, "/control/") {
			s.counts.add(p)
		}
		next.ServeHTTP(w, r)
	})
}

// instrument records the request counter and duration histogram. The path
// label is the matched route, never the raw path, to bound cardinality.
func (s *service) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		// ServeMux sets r.Pattern, e.g. "GET /healthz", on this very request.
		route := "unmatched"
		if _, p, ok := strings.Cut(r.Pattern, " "); ok {
			route = p
		} else if r.Pattern != "" {
			route = r.Pattern
		}
		code := rec.code
		if code == 0 {
			code = http.StatusOK // what net/http sends for a handler that wrote nothing
			if r.Context().Err() != nil {
				code = 499 // nothing was sent: the client went away first
			}
		}
		s.metrics.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
		s.metrics.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// observed applies hang and latency to an observed endpoint.
func (s *service) observed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		snap := s.state.snapshot()
		for snap.mode == modeHang {
			s.hanging.Add(1)
			s.metrics.hanging.Inc()
			res := s.wait(r.Context(), 0, snap.changed)
			s.metrics.hanging.Dec()
			s.hanging.Add(-1)
			if !s.proceed(w, res) {
				return
			}
			// Serve the request in whatever mode replaced hang.
			snap = s.state.snapshot()
		}
		if snap.latency > 0 && !s.proceed(w, s.wait(r.Context(), snap.latency, nil)) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

type waitResult int

const (
	waitDone       waitResult = iota // the time passed or the mode changed
	waitClientGone                   // the client went away
	waitShutdown                     // the service is stopping
)

// wait blocks until d passes (forever when d is 0), changed is closed, the
// client goes away or the service stops: a held request never outlives its
// client, so no goroutine leaks when an observer times out.
func (s *service) wait(ctx context.Context, d time.Duration, changed <-chan struct{}) waitResult {
	var elapsed <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		elapsed = t.C
	}
	select {
	case <-elapsed:
		return waitDone
	case <-changed:
		return waitDone
	case <-ctx.Done():
		return waitClientGone
	case <-s.quit:
		return waitShutdown
	}
}

// proceed answers for a wait that did not end normally and tells whether the
// handler should go on.
func (s *service) proceed(w http.ResponseWriter, res waitResult) bool {
	switch res {
	case waitClientGone:
		return false
	case waitShutdown:
		w.Header().Set("Connection", "close")
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return false
	default:
		return true
	}
}

func (s *service) unlessFailing(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.state.snapshot().mode == modeFail {
			http.Error(w, "failing", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *service) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !s.state.healthy(time.Now()) {
		http.Error(w, "failing", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok"))
}

// statusBody is the JSON of GET /api/status.
type statusBody struct {
	Status        string            `json:"status"`
	Mode          mode              `json:"mode"`
	Backlog       int64             `json:"backlog"`
	Latency       string            `json:"latency"`
	UptimeSeconds float64           `json:"uptime_seconds"`
	Requests      map[string]uint64 `json:"requests"`
	Version       string            `json:"version"`
}

func (s *service) status(w http.ResponseWriter, _ *http.Request) {
	snap := s.state.snapshot()
	code := http.StatusOK
	if snap.mode == modeFail {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, statusBody{
		Status:        snap.mode.status(),
		Mode:          snap.mode,
		Backlog:       s.backlog.Load(),
		Latency:       snap.latency.String(),
		UptimeSeconds: time.Since(s.started).Seconds(),
		Requests:      s.counts.snapshot(),
		Version:       version,
	})
}

// controlStateBody is what GET /control/state and every control POST
// answer: the state after the call. It is readable in every mode, unlike
// /api/status and /metrics, which hang in mode hang.
type controlStateBody struct {
	Mode       mode   `json:"mode"`
	Latency    string `json:"latency"` // as set; mode slow uses 2s while it is 0s
	FlapPeriod string `json:"flap_period"`
	Backlog    int64  `json:"backlog"`
	Hanging    int64  `json:"hanging"` // requests held by mode hang right now
}

func (s *service) writeControlState(w http.ResponseWriter) {
	snap := s.state.snapshot()
	writeJSON(w, http.StatusOK, controlStateBody{
		Mode:       snap.mode,
		Latency:    snap.setLatency.String(),
		FlapPeriod: snap.flapPeriod.String(),
		Backlog:    s.backlog.Load(),
		Hanging:    s.hanging.Load(),
	})
}

func (s *service) controlState(w http.ResponseWriter, _ *http.Request) {
	s.writeControlState(w)
}

// controlValue reads the value parameter from the query or a form body.
func controlValue(w http.ResponseWriter, r *http.Request) (string, bool) {
	v := r.FormValue("value")
	if v == "" {
		http.Error(w, "missing value parameter", http.StatusBadRequest)
		return "", false
	}
	return v, true
}

func (s *service) controlMode(w http.ResponseWriter, r *http.Request) {
	v, ok := controlValue(w, r)
	if !ok {
		return
	}
	m, err := parseMode(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.state.setMode(m, time.Now())
	s.metrics.setMode(m)
	s.log.Info("mode set", "mode", m)
	s.writeControlState(w)
}

func (s *service) controlLatency(w http.ResponseWriter, r *http.Request) {
	d, ok := parseControlDuration(w, r, "latency")
	if !ok {
		return
	}
	s.state.setLatency(d)
	s.log.Info("latency set", "latency", d)
	s.writeControlState(w)
}

func (s *service) controlFlap(w http.ResponseWriter, r *http.Request) {
	d, ok := parseControlDuration(w, r, "flap period")
	if !ok {
		return
	}
	s.state.setFlapPeriod(d, time.Now())
	s.log.Info("flap period set", "flap_period", d)
	s.writeControlState(w)
}

func parseControlDuration(w http.ResponseWriter, r *http.Request, what string) (time.Duration, bool) {
	v, ok := controlValue(w, r)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(v)
	if err == nil && d < 0 {
		err = fmt.Errorf("%v is negative", d)
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("parse %s: %v", what, err), http.StatusBadRequest)
		return 0, false
	}
	return d, true
}

func (s *service) controlBacklog(w http.ResponseWriter, r *http.Request) {
	v, ok := controlValue(w, r)
	if !ok {
		return
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err == nil && n < 0 {
		err = fmt.Errorf("%d is negative", n)
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("parse backlog: %v", err), http.StatusBadRequest)
		return
	}
	s.backlog.Store(n)
	s.metrics.backlog.Set(float64(n))
	s.log.Info("backlog set", "backlog", n)
	s.writeControlState(w)
}

func (s *service) controlCounts(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.counts.snapshot())
}

// connectionsBody is the JSON of GET /control/connections.
type connectionsBody struct {
	Accepted uint64 `json:"accepted"`
}

func (s *service) controlConnections(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, connectionsBody{Accepted: s.conns.Load()})
}

func (s *service) controlReset(w http.ResponseWriter, _ *http.Request) {
	s.counts.reset()
	s.conns.Store(0)
	s.log.Info("counts reset")
	s.writeControlState(w)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do then
}

// requestCounts counts requests per path.
type requestCounts struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (c *requestCounts) add(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[path]; !ok && len(c.m) >= maxCountedPaths {
		path = "other"
	}
	c.m[path]++
}

func (c *requestCounts) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

func (c *requestCounts) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}

// statusRecorder remembers the status code written, for the metrics.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 && code >= 200 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
