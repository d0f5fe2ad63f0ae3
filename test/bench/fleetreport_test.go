package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestAPhaseIsSaturatedWhenTooFewEventsReachTheConsumer(t *testing.T) {
	phase := func(clients, received int) fleetPhase {
		return fleetPhase{clients: clients, took: 10 * time.Second, window: consumerWindow{latencies: make([]time.Duration, received)}}
	}
	for _, tc := range []struct {
		name      string
		phase     fleetPhase
		saturated bool
	}{
		{"no client", phase(0, 0), false},
		{"every event", phase(100, 100*fleetRate*10), false},
		{"just above the share", phase(100, 100*fleetRate*10*91/100), false},
		{"below the share", phase(200, 200*fleetRate*10*65/100), true},
		{"nothing received", phase(10, 0), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.saturated, tc.phase.saturated())
			if tc.saturated {
				assert.Contains(t, tc.phase.saturation(), "saturated")
			} else {
				assert.Empty(t, tc.phase.saturation())
			}
		})
	}
}
