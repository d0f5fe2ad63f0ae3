//go:build !wasip1

package sdk

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
)

// The layouts are checked against the daemon's generated types by the
// daemon's tests; here, what the SDK alone can tell: the bytes it writes
// stay what they were (testdata/*.hex, reviewed when they change), and it
// reads what a host may send.

// golden compares b with testdata/name.hex, rewritten when UPDATE_GOLDEN
// is set.
func golden(t *testing.T, name string, b []byte) {
	t.Helper()
	file := filepath.Join("testdata", name+".hex")
	got := hex.Dump(b)
	if os.Getenv("UPDATE_GOLDEN") != "" {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(file, []byte(got), 0o644))
	}
	want, err := os.ReadFile(file)
	require.NoError(t, err, "UPDATE_GOLDEN=1 go test writes it")
	assert.Equal(t, string(want), got)
}

func TestAppendObservation(t *testing.T) {
	o := Observation{
		TypeSuffix: "threshold",
		Severity:   SeverityHigh,
		Subject:    "web",
		Payload:    []byte(`{"value":3}`),
		Schema:     "example.v1",
		Labels:     map[string]string{"b": "2", "a": "1", "empty": ""},
		Result:     ResultFailed,
		Error:      "3 is over 2",
	}
	golden(t, "observation", appendObservation(nil, &o))
	assert.Equal(t, appendObservation(nil, &o), appendObservation(nil, &o), "labels encode in a stable order")
	assert.Empty(t, appendObservation(nil, &Observation{}), "zero fields are left out, as proto3 does")
}

func TestAppendHTTPRequest(t *testing.T) {
	r := HTTPRequest{URL: "/metrics", Header: map[string]string{"Accept": "text/plain"}, Body: []byte("x"), Extract: []string{"/a", ""}}
	golden(t, "http-request", appendHTTPRequest(nil, "POST", &r))
}

func TestDecodeObserveRequest(t *testing.T) {
	want := &Request{
		Observer:   "backlog",
		Target:     Target{Name: "web", URL: "http://127.0.0.1:8080"},
		ConfigJSON: []byte(`{"threshold":100}`),
		Time:       at,
		State:      []byte{0, 1, 2},
	}
	b := encodeRequest(want)
	// A field a later host may add must not break an older plugin.
	b = protowire.AppendTag(b, 99, protowire.BytesType)
	b = protowire.AppendString(b, "from the future")
	b = protowire.AppendTag(b, 98, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 7)

	got, err := decodeObserveRequest(b)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	got, err = decodeObserveRequest(nil)
	require.NoError(t, err, "an empty message is a valid message")
	assert.True(t, got.Time.IsZero() && got.State == nil)

	// Before 1970: the seconds are a negative varint.
	old := time.Date(1960, 1, 1, 0, 0, 0, 5, time.UTC)
	got, err = decodeObserveRequest(encodeRequest(&Request{Time: old}))
	require.NoError(t, err)
	assert.Equal(t, old, got.Time)
}

func TestDecodeHTTPResponse(t *testing.T) {
	want := &Response{
		StatusCode: 503,
		Header:     map[string]string{"Content-Type": "application/json", "X-A": "1"},
		Body:       []byte(`{"status":"failing"}`),
		Truncated:  true,
		Values:     map[string]string{"/status": `"failing"`},
	}
	got, err := decodeHTTPResponse(encodeResponse(want))
	require.NoError(t, err)
	assert.Equal(t, want, got)
}

func TestDecodeRejectsMalformedMessages(t *testing.T) {
	full := encodeRequest(&Request{Observer: "backlog", State: []byte("abc")})
	for name, b := range map[string][]byte{
		"truncated":           full[:len(full)-1],
		"length past end":     {0x0a, 0x10, 'x'},
		"bad tag":             {0x00},
		"unterminated varint": {0x08, 0xff},
	} {
		t.Run(strings.ReplaceAll(name, " ", "-"), func(t *testing.T) {
			_, err := decodeObserveRequest(b)
			assert.ErrorContains(t, err, "decode ObserveRequest: ")
			_, err = decodeHTTPResponse(b)
			assert.ErrorContains(t, err, "decode HttpResponse: ")
		})
	}
}

func TestResponseNumber(t *testing.T) {
	r := &Response{Values: map[string]string{"/n": "-1.5e3", "/s": `"150"`, "/o": `{"a":1}`, "/t": "true"}}
	n, err := r.Number("/n")
	require.NoError(t, err)
	assert.Equal(t, -1500.0, n)
	for p, want := range map[string]string{
		"/s":       `pointer "/s": "150", not a number`,
		"/o":       `pointer "/o": {"a":1}, not a number`,
		"/t":       `pointer "/t": true, not a number`,
		"/missing": `pointer "/missing": no value in the body (not extracted, absent, or the body is not JSON)`,
	} {
		_, err := r.Number(p)
		assert.EqualError(t, err, want, p)
	}
	v, err := r.Value("/s")
	require.NoError(t, err)
	assert.Equal(t, `"150"`, v)
}
