package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSeqTrackMissing: the fleet row's loss count is every sequence from
// 1 to the last neither received nor reported dropped, as test/consumer
// counts it, with duplicates told apart.
func TestSeqTrackMissing(t *testing.T) {
	for _, tc := range []struct {
		name       string
		received   []uint64
		dropped    []seqRange
		upto       uint64
		missing    []seqRange
		duplicates int
	}{
		{name: "all, in order", received: []uint64{1, 2, 3}, upto: 3},
		{name: "all, out of order, with duplicates", received: []uint64{2, 1, 2, 3, 1}, upto: 3, duplicates: 2},
		{name: "a gap", received: []uint64{1, 2, 5}, upto: 5, missing: []seqRange{{3, 4}}},
		{name: "the first ones", received: []uint64{3}, upto: 3, missing: []seqRange{{1, 2}}},
		{name: "a gap reported dropped", received: []uint64{1, 5}, dropped: []seqRange{{2, 4}}, upto: 5},
		{name: "a gap partly reported", received: []uint64{1, 6}, dropped: []seqRange{{3, 4}}, upto: 6, missing: []seqRange{{2, 2}, {5, 5}}},
		{name: "accepted beyond the last received", received: []uint64{1, 2}, upto: 4, missing: []seqRange{{3, 4}}},
		{name: "nothing received", upto: 2, missing: []seqRange{{1, 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &seqTrack{dropped: tc.dropped}
			duplicates := 0
			for _, s := range tc.received {
				if !tr.add(s) {
					duplicates++
				}
			}
			assert.Equal(t, tc.missing, tr.missing(tc.upto))
			assert.Equal(t, tc.duplicates, duplicates)
		})
	}
}

// TestConnectionName reads connection_name from client_properties as
// `rabbitmqctl list_connections --formatter json` writes them.
func TestConnectionName(t *testing.T) {
	for _, tc := range []struct {
		name, props, want string
	}{
		{"named", `[["platform","longstr","golang"],["connection_name","longstr","observerd fleet-001"],["capabilities","table",[["basic.nack","bool",true]]]]`, "observerd fleet-001"},
		{"unnamed", `[["platform","longstr","golang"]]`, ""},
		{"empty", `[]`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var props []any
			require.NoError(t, json.Unmarshal([]byte(tc.props), &props))
			assert.Equal(t, tc.want, connectionName(props))
		})
	}
}
