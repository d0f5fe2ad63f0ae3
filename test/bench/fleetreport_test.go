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

func TestDeliveringAgainSaysWhenTheConsumerLagged(t *testing.T) {
	for _, tc := range []struct {
		name    string
		resumed []time.Duration
		says    string
	}{
		{"none", nil, "none of the 3 received before the node was back"},
		{"some", []time.Duration{time.Second}, "1000 ms / 1000 ms / 1000 ms, 1 of 3 received before the node was back"},
		{"all", []time.Duration{time.Second, time.Second, 2 * time.Second}, "1000 ms / 2000 ms / 2000 ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &fleetKill{onIt: 3, resumed: tc.resumed}
			got := k.deliveringAgain()
			assert.Contains(t, got, tc.says)
			if tc.name == "all" {
				assert.NotContains(t, got, "of 3")
			}
		})
	}
}
