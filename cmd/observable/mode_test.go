package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseMode(t *testing.T) {
	for _, m := range modes {
		got, err := parseMode(string(m))
		require.NoError(t, err)
		require.Equal(t, m, got)
	}
	for _, bad := range []string{"", "OK", "down"} {
		_, err := parseMode(bad)
		require.ErrorContains(t, err, "parse mode")
	}
}

func TestModeStateLatency(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		mode    mode
		latency time.Duration
		want    time.Duration
	}{
		{"ok without latency", modeOK, 0, 0},
		{"ok with latency", modeOK, 30 * time.Millisecond, 30 * time.Millisecond},
		{"slow without latency takes the default", modeSlow, 0, defaultSlowLatency},
		{"slow with latency", modeSlow, 250 * time.Millisecond, 250 * time.Millisecond},
		{"fail with latency", modeFail, 10 * time.Millisecond, 10 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newModeState(tc.mode, tc.latency, 0, now)
			snap := s.snapshot()
			require.Equal(t, tc.want, snap.latency)
			require.Equal(t, tc.latency, snap.setLatency)
		})
	}
}

func TestModeStateHealthy(t *testing.T) {
	t0 := time.Now()
	period := time.Second
	tests := []struct {
		name   string
		mode   mode
		period time.Duration
		at     []time.Duration // offsets from t0 of successive /healthz requests
		want   []bool
	}{
		{"ok", modeOK, 0, []time.Duration{0, 0, 0}, []bool{true, true, true}},
		{"fail", modeFail, 0, []time.Duration{0, 0}, []bool{false, false}},
		{"slow is healthy", modeSlow, 0, []time.Duration{0}, []bool{true}},
		{"flap per request", modeFlap, 0, []time.Duration{0, 0, 0, 0}, []bool{true, false, true, false}},
		{
			"flap per period", modeFlap, period,
			[]time.Duration{0, period / 2, period, period + period/2, 2 * period, 3*period + 1},
			[]bool{true, true, false, false, true, false},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newModeState(tc.mode, 0, tc.period, t0)
			var got []bool
			for _, off := range tc.at {
				got = append(got, s.healthy(t0.Add(off)))
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestSetModeWakesWaitersAndRestartsFlap(t *testing.T) {
	t0 := time.Now()
	s := newModeState(modeFlap, 0, 0, t0)
	require.True(t, s.healthy(t0))
	changed := s.snapshot().changed

	s.setMode(modeFlap, t0)
	select {
	case <-changed:
	default:
		t.Fatal("setMode did not close the changed channel")
	}
	require.True(t, s.healthy(t0), "flapping restarts from healthy")
	require.NotEqual(t, changed, s.snapshot().changed)
}
