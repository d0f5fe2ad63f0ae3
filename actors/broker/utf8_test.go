package broker

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

func TestInvalidUTF8IsStoredNotWedged(t *testing.T) {
	// A prometheus error quoting a target's bytes, a label, a map key:
	// protobuf refuses to encode them; the outbox stores the event with
	// U+FFFD in their place.
	o, err := OpenOutbox(t.TempDir(), OutboxOptions{})
	require.NoError(t, err)
	defer o.Close()
	ev := messages.NewEvent(messages.TypeObservationPrometheus)
	ev.Subject = "web\xff"
	ev.Data = &messages.Event_Prometheus{Prometheus: &messages.PrometheusObservation{
		Error:   "text format parsing error in line 3: unexpected \xfe\xfe",
		Samples: []*messages.Sample{{Name: "m", Labels: map[string]string{"k\xff": "v\xff"}}},
	}}
	_, err = proto.Marshal(ev)
	require.Error(t, err, "the case this test is about")

	_, err = o.Append([]*messages.Event{ev})
	require.NoError(t, err)
	recs, err := o.After(0, 10)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	got := recs[0].Event
	assert.Equal(t, "web\uFFFD", got.Subject)
	assert.Equal(t, "text format parsing error in line 3: unexpected \uFFFD", got.GetPrometheus().GetError())
	assert.Equal(t, map[string]string{"k\uFFFD": "v\uFFFD"}, got.GetPrometheus().GetSamples()[0].GetLabels())
}
