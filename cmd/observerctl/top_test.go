package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRenderTopGolden draws frames of two samples a second apart (rates
// known) at two terminal sizes, and one of a daemon that does not answer:
// testdata/top-*.golden (go test -update rewrites them).
func TestRenderTopGolden(t *testing.T) {
	now := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	last := &sample{at: now.Add(-time.Second), state: snapshotAt(now.Add(-time.Second)), accepted: 8000}
	cur := &sample{at: now, state: snapshotAt(now), accepted: 8012, dropped: 3, oldest: 2}
	for i := range cur.state.Observers {
		o := &cur.state.Observers[i]
		o.Observations += uint64(i + 1) // 1, 2 and 3 a second
	}
	cur.state.Observers[0].LastLatency = 0.00085
	cur.state.Observers[1].LastLatency = 0.0123
	down := &sample{at: now, err: errors.New("get /v1/state from http://127.0.0.1:9464: connection refused")}
	for _, tc := range []struct {
		name          string
		s             *sample
		width, height int
	}{
		{"wide", cur, 120, 20},
		{"small", cur, 60, 8},
		{"down", down, 120, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			renderTop(&b, newView("http://127.0.0.1:9464", tc.s, last), tc.width, tc.height)
			lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
			assert.LessOrEqual(t, len(lines), tc.height)
			for _, l := range lines {
				assert.LessOrEqual(t, utf8.RuneCountInString(l), tc.width, "wider than the terminal: %q", l)
			}
			golden := filepath.Join("testdata", fmt.Sprintf("top-%s.golden", tc.name))
			if *update {
				require.NoError(t, os.WriteFile(golden, b.Bytes(), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test -update to create it")
			assert.Equal(t, string(want), b.String())
		})
	}
}

func TestLatency(t *testing.T) {
	for seconds, want := range map[float64]string{
		0: "-", -1: "-", 0.00085: "850µs", 0.0123456: "12.3ms", 0.25: "250ms", 1.2345: "1.23s", 75: "1m15s",
	} {
		assert.Equal(t, want, latency(seconds), "%v s", seconds)
	}
}
