package main

import (
	"fmt"
	"sync"
	"time"
)

// mode is how the observed endpoints behave.
type mode string

const (
	modeOK   mode = "ok"   // healthy
	modeFail mode = "fail" // 503 on every observed endpoint
	modeSlow mode = "slow" // healthy but answers after the latency (2s when unset)
	modeFlap mode = "flap" // /healthz alternates between 200 and 503
	modeHang mode = "hang" // accepts requests and never answers until the mode changes
)

// defaultSlowLatency is what mode slow waits when no latency was set, so that
// "slow" alone is noticeably slow against a typical 1s observer timeout.
const defaultSlowLatency = 2 * time.Second

var modes = []mode{modeOK, modeFail, modeSlow, modeFlap, modeHang}

func parseMode(s string) (mode, error) {
	for _, m := range modes {
		if string(m) == s {
			return m, nil
		}
	}
	return modeOK, fmt.Errorf("parse mode: %q is not one of ok, fail, slow, flap, hang", s)
}

// status is the word /api/status reports for a mode.
func (m mode) status() string {
	switch m {
	case modeFail:
		return "failing"
	case modeSlow:
		return "degraded"
	case modeFlap:
		return "flapping"
	case modeHang:
		return "hanging"
	default:
		return "ok"
	}
}

// modeState is the switchable behaviour, shared by all handlers.
type modeState struct {
	mu         sync.Mutex
	mode       mode
	since      time.Time // when mode was set, the origin of flap periods
	latency    time.Duration
	flapPeriod time.Duration
	flapCount  uint64 // /healthz requests answered in this flap mode
	// changed is closed and replaced at every mode change, so that hung
	// requests wake up without polling.
	changed chan struct{}
}

func newModeState(m mode, latency, flapPeriod time.Duration, now time.Time) *modeState {
	return &modeState{mode: m, since: now, latency: latency, flapPeriod: flapPeriod, changed: make(chan struct{})}
}

// snapshot is a consistent view of the state at one instant.
type snapshot struct {
	mode       mode
	latency    time.Duration // the effective one: the mode slow default applied
	setLatency time.Duration // the configured one
	flapPeriod time.Duration
	changed    <-chan struct{}
}

func (s *modeState) snapshot() snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	eff := s.latency
	if s.mode == modeSlow && eff == 0 {
		eff = defaultSlowLatency
	}
	return snapshot{mode: s.mode, latency: eff, setLatency: s.latency, flapPeriod: s.flapPeriod, changed: s.changed}
}

// setMode switches the mode and wakes every request waiting on the old one.
// Setting the current mode again restarts flapping from healthy, so that a
// test always knows the first answer.
func (s *modeState) setMode(m mode, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = m
	s.since = now
	s.flapCount = 0
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *modeState) setLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

func (s *modeState) setFlapPeriod(d time.Duration, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flapPeriod = d
	s.since = now
	s.flapCount = 0
}

// healthy tells whether a /healthz request at now passes. In mode flap it
// consumes one step of the per-request alternation.
func (s *modeState) healthy(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.mode {
	case modeFail:
		return false
	case modeFlap:
		if s.flapPeriod > 0 {
			return (now.Sub(s.since)/s.flapPeriod)%2 == 0
		}
		n := s.flapCount
		s.flapCount++
		return n%2 == 0
	default:
		return true
	}
}
