package messages

import (
	"math"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewEventAndStamp(t *testing.T) {
	ev := NewEvent(TypeObservationHTTP)
	id, err := uuid.Parse(ev.Id)
	require.NoError(t, err)
	assert.Equal(t, uuid.Version(7), id.Version())
	assert.Equal(t, TypeObservationHTTP, ev.Type)
	require.NotNil(t, ev.Time)
	assert.Zero(t, ev.Category, "the envelope is the stamp's")

	Stamp(ev, "web-1.example", "v1", "observer/web/health")
	assert.Equal(t, Category_CATEGORY_OBSERVATION, ev.Category)
	assert.Equal(t, Severity_SEVERITY_INFO, ev.Severity, "info when the emitter set none")
	assert.Equal(t, "web-1.example", ev.Node)
	assert.Equal(t, "observerd://web-1.example/observer/web/health", ev.Source)
	assert.Equal(t, "web-1.example", ev.Subject, "the node when the emitter set none")
	require.Len(t, ev.Provenance, 1)
	assert.Equal(t, "observerd", ev.Provenance[0].Service)
	assert.Equal(t, "v1", ev.Provenance[0].Version)
	assert.Equal(t, ev.Id, ev.CorrelationId, "a root is its chain's correlation")
	assert.Empty(t, ev.CausationId, "a root has no cause")

	kept := NewEvent(TypeObserverFailed)
	kept.Severity, kept.Subject = Severity_SEVERITY_MEDIUM, "web"
	Stamp(kept, "n", "v", "task-manager")
	assert.Equal(t, Severity_SEVERITY_MEDIUM, kept.Severity)
	assert.Equal(t, "web", kept.Subject)
	assert.Equal(t, Category_CATEGORY_SYSTEM, kept.Category)

	caused := NewEvent(TypeObserverStarted)
	caused.CorrelationId, caused.CausationId = "root", "root"
	Stamp(caused, "n", "v", "observer/web/health")
	assert.Equal(t, "root", caused.CorrelationId, "an emitter's correlation is kept")
}

func TestRoutingKey(t *testing.T) {
	assert.Equal(t, "observation.http.web-1_example_com", RoutingKey(TypeObservationHTTP, "web-1.example.com"))
	assert.Equal(t, "observation.plugin.queue.depth.n", RoutingKey("observation.plugin.queue.depth", "n"))
}

// ResultOf reads any payload's result field: a kind added to the schema
// needs no case here.
func TestResultOf(t *testing.T) {
	tests := []struct {
		name string
		ev   *Event
		want Result
		ok   bool
	}{
		{"http", &Event{Type: TypeObservationHTTP, Data: &Event_Http{Http: &HttpObservation{Result: Result_RESULT_FAILED}}}, Result_RESULT_FAILED, true},
		{"prometheus", &Event{Type: TypeObservationPrometheus, Data: &Event_Prometheus{Prometheus: &PrometheusObservation{Result: Result_RESULT_TIMEOUT}}}, Result_RESULT_TIMEOUT, true},
		{"tcp", &Event{Type: TypeObservationTCP, Data: &Event_Tcp{Tcp: &TcpObservation{Result: Result_RESULT_ERROR}}}, Result_RESULT_ERROR, true},
		{"process", &Event{Type: TypeObservationProcess, Data: &Event_Process{Process: &ProcessObservation{Result: Result_RESULT_OK}}}, Result_RESULT_OK, true},
		{"plugin", &Event{Type: "observation.plugin.x", Data: &Event_Plugin{Plugin: &PluginPayload{Result: Result_RESULT_FAILED}}}, Result_RESULT_FAILED, true},
		{"plugin: no result, OK", &Event{Type: "observation.plugin.x", Data: &Event_Plugin{Plugin: &PluginPayload{}}}, Result_RESULT_OK, true},
		{"unspecified, OK", &Event{Type: TypeObservationTCP, Data: &Event_Tcp{Tcp: &TcpObservation{}}}, Result_RESULT_OK, true},
		{"an observation without payload", &Event{Type: TypeObservationHTTP}, Result_RESULT_OK, true},
		{"not an observation", &Event{Type: TypeStateChanged, Data: &Event_StateChange{StateChange: &StateChange{LastResult: Result_RESULT_FAILED}}}, Result_RESULT_UNSPECIFIED, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ResultOf(tc.ev)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.ok, ok)
		})
	}
}

func TestDataSchemaNamesTheEvent(t *testing.T) {
	assert.Equal(t, "type.googleapis.com/"+string((&Event{}).ProtoReflect().Descriptor().FullName()), DataSchema)
}

// TestCloudEventsSequenceOrdersAsNumbers: the strings compare as the
// numbers, across digit counts, up to the largest sequence.
func TestCloudEventsSequenceOrdersAsNumbers(t *testing.T) {
	seqs := []uint64{0, 1, 9, 10, 99, 100, 278, 279, 1e9, 1<<63 - 1, 1 << 63, math.MaxUint64 - 1, math.MaxUint64}
	for i := 1; i < len(seqs); i++ {
		a, b := CloudEventsSequence(seqs[i-1]), CloudEventsSequence(seqs[i])
		assert.Less(t, a, b, "%d before %d", seqs[i-1], seqs[i])
		assert.Len(t, b, 20)
	}
	assert.Equal(t, "00000000000000000278", CloudEventsSequence(278))
}
