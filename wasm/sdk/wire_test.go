//go:build !wasip1

// The tests run on the host only, like the package's others: they check
// the guest's side against package messages, the daemon's side.

package sdk

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/polar/observerd/messages"
)

// The hand-written encoding must agree with the generated types that the
// daemon uses on its side of the ABI.

func TestAppendObservationDecodesAsPluginObservation(t *testing.T) {
	o := Observation{
		TypeSuffix: "threshold",
		Severity:   SeverityHigh,
		Subject:    "web",
		Payload:    []byte(`{"value":3}`),
		Schema:     "example.v1",
		Labels:     map[string]string{"b": "2", "a": "1", "empty": ""},
	}
	var got messages.PluginObservation
	require.NoError(t, proto.Unmarshal(appendObservation(nil, &o), &got))
	assert.True(t, proto.Equal(&messages.PluginObservation{
		TypeSuffix: "threshold",
		Severity:   messages.Severity_SEVERITY_HIGH,
		Subject:    "web",
		Payload:    []byte(`{"value":3}`),
		Schema:     "example.v1",
		Labels:     map[string]string{"b": "2", "a": "1", "empty": ""},
	}, &got), "got %v", &got)

	assert.Equal(t, appendObservation(nil, &o), appendObservation(nil, &o), "labels encode in a stable order")
	assert.Empty(t, appendObservation(nil, &Observation{}), "zero fields are left out, as proto3 does")
}

func TestSeveritiesMatchTheProto(t *testing.T) {
	for sev, want := range map[Severity]messages.Severity{
		0:                messages.Severity_SEVERITY_UNSPECIFIED,
		SeverityInfo:     messages.Severity_SEVERITY_INFO,
		SeverityLow:      messages.Severity_SEVERITY_LOW,
		SeverityMedium:   messages.Severity_SEVERITY_MEDIUM,
		SeverityHigh:     messages.Severity_SEVERITY_HIGH,
		SeverityCritical: messages.Severity_SEVERITY_CRITICAL,
	} {
		assert.Equal(t, int32(want), int32(sev), want.String())
	}
}

func TestAppendHTTPRequestDecodesAsHttpRequest(t *testing.T) {
	r := HTTPRequest{URL: "/metrics", Header: map[string]string{"Accept": "text/plain"}, Body: []byte("x")}
	var got messages.HttpRequest
	require.NoError(t, proto.Unmarshal(appendHTTPRequest(nil, "POST", &r), &got))
	assert.True(t, proto.Equal(&messages.HttpRequest{
		Method:  "POST",
		Url:     "/metrics",
		Headers: map[string]string{"Accept": "text/plain"},
		Body:    []byte("x"),
	}, &got), "got %v", &got)
}

func TestDecodeObserveRequest(t *testing.T) {
	when := time.Date(2025, 3, 1, 12, 30, 0, 123456789, time.UTC)
	b, err := proto.Marshal(&messages.ObserveRequest{
		Observer:   "backlog",
		Target:     &messages.Target{Name: "web", Url: "http://127.0.0.1:8080"},
		ConfigJson: []byte(`{"threshold":100}`),
		Time:       timestamppb.New(when),
		State:      []byte{0, 1, 2},
	})
	require.NoError(t, err)
	// A field a later host may add must not break an older plugin.
	b = protowire.AppendTag(b, 99, protowire.BytesType)
	b = protowire.AppendString(b, "from the future")
	b = protowire.AppendTag(b, 98, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 7)

	got, err := decodeObserveRequest(b)
	require.NoError(t, err)
	assert.Equal(t, &Request{
		Observer:   "backlog",
		Target:     Target{Name: "web", URL: "http://127.0.0.1:8080"},
		ConfigJSON: []byte(`{"threshold":100}`),
		Time:       when,
		State:      []byte{0, 1, 2},
	}, got)

	got, err = decodeObserveRequest(nil)
	require.NoError(t, err, "an empty message is a valid message")
	assert.True(t, got.Time.IsZero() && got.State == nil)

	// Before 1970: the seconds are a negative varint.
	old := time.Date(1960, 1, 1, 0, 0, 0, 5, time.UTC)
	b, err = proto.Marshal(&messages.ObserveRequest{Time: timestamppb.New(old)})
	require.NoError(t, err)
	got, err = decodeObserveRequest(b)
	require.NoError(t, err)
	assert.Equal(t, old, got.Time)
}

func TestDecodeHTTPResponse(t *testing.T) {
	b, err := proto.Marshal(&messages.HttpResponse{
		StatusCode: 503,
		Headers:    map[string]string{"Content-Type": "application/json", "X-A": "1"},
		Body:       []byte(`{"status":"failing"}`),
		Truncated:  true,
	})
	require.NoError(t, err)
	got, err := decodeHTTPResponse(b)
	require.NoError(t, err)
	assert.Equal(t, &Response{
		StatusCode: 503,
		Header:     map[string]string{"Content-Type": "application/json", "X-A": "1"},
		Body:       []byte(`{"status":"failing"}`),
		Truncated:  true,
	}, got)
}

func TestDecodeRejectsMalformedMessages(t *testing.T) {
	full, err := proto.Marshal(&messages.ObserveRequest{Observer: "backlog", State: []byte("abc")})
	require.NoError(t, err)
	for name, b := range map[string][]byte{
		"truncated":           full[:len(full)-1],
		"length past end":     {0x0a, 0x10, 'x'},
		"bad tag":             {0x00},
		"unterminated varint": {0x08, 0xff},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := decodeObserveRequest(b)
			assert.ErrorContains(t, err, "decode ObserveRequest: ")
			_, err = decodeHTTPResponse(b)
			assert.ErrorContains(t, err, "decode HttpResponse: ")
		})
	}
}
