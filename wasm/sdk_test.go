package wasm

import (
	"bytes"
	"maps"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/fuzzbudget"
	"github.com/polar/observerd/wasm/sdk"
)

// The guest SDK (a module of its own, which does not require the daemon's)
// writes the ABI's messages by hand: these tests hold its encoding to the
// generated types that the host decodes with, through sdk.Call, as a host
// would call it.

// sdkHost is the host's side for sdk.Call: what the SDK sends, decoded
// with the generated types; response is the encoded HttpResponse every
// request gets.
type sdkHost struct {
	t        testing.TB
	emitted  []*messages.PluginObservation
	requests []*messages.HttpRequest
	response []byte
	pending  []byte
	logs     []string
}

func (h *sdkHost) Emit(b []byte) int32 {
	o, err := decodeObservation(bytes.Clone(b))
	if err != nil {
		h.t.Errorf("the host rejects what the SDK emitted: %v", err)
		return emitInvalid
	}
	h.emitted = append(h.emitted, o)
	return resultOK
}

func (h *sdkHost) Log(_ sdk.Level, msg string) { h.logs = append(h.logs, msg) }
func (h *sdkHost) SetState([]byte) int32       { return resultOK }

func (h *sdkHost) HTTPRequest(b []byte) int32 {
	var r messages.HttpRequest
	if err := proto.Unmarshal(b, &r); err != nil {
		h.t.Errorf("the host cannot decode the SDK's HttpRequest: %v", err)
		return requestInvalid
	}
	h.requests = append(h.requests, &r)
	h.pending = bytes.Clone(h.response)
	return int32(len(h.pending))
}

func (h *sdkHost) HTTPResponse(buf []byte) int32 {
	if len(buf) < len(h.pending) {
		return responseShort
	}
	return int32(copy(buf, h.pending))
}

// sdkHandle registers f as the SDK's handler for one test.
func sdkHandle(tb testing.TB, f sdk.Handler) {
	sdk.Handle(f)
	tb.Cleanup(func() { sdk.Handle(nil) })
}

func mustMarshal(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := proto.Marshal(m)
	require.NoError(tb, err)
	return b
}

func TestSDKSpeaksTheHostsMessages(t *testing.T) {
	when := time.Date(2025, 3, 1, 12, 30, 0, 123456789, time.UTC)
	request := mustMarshal(t, &messages.ObserveRequest{
		Observer:   "backlog",
		Target:     &messages.Target{Name: "web", Url: "http://127.0.0.1:8080"},
		ConfigJson: []byte(`{"threshold":100}`),
		Time:       timestamppb.New(when),
		State:      []byte{0, 1, 2},
	})
	// A field a later host may add must not break an older plugin.
	request = protowire.AppendTag(request, 99, protowire.BytesType)
	request = protowire.AppendString(request, "from the future")
	h := &sdkHost{t: t, response: mustMarshal(t, &messages.HttpResponse{
		StatusCode: 503,
		Headers:    map[string]string{"Content-Type": "application/json", "X-A": "1"},
		Body:       []byte(`{"status":"failing"}`),
		Truncated:  true,
		Values:     map[string]string{"/status": `"failing"`, "": `{"status":"failing"}`},
	})}
	var (
		req  *sdk.Request
		resp *sdk.Response
	)
	sdkHandle(t, func(r *sdk.Request) ([]sdk.Observation, error) {
		req = r
		var err error
		resp, err = sdk.Do(&sdk.HTTPRequest{Method: "POST", URL: "/metrics", Header: map[string]string{"Accept": "text/plain"}, Body: []byte("x"),
			Extract: []string{"/status", ""}})
		require.NoError(t, err)
		return []sdk.Observation{{
			TypeSuffix: "threshold",
			Severity:   sdk.SeverityHigh,
			Subject:    "web",
			Payload:    []byte(`{"value":3}`),
			Schema:     "example.v1",
			Labels:     map[string]string{"b": "2", "a": "1", "empty": ""},
			Result:     sdk.ResultFailed,
			Error:      "3 is over 2",
		}, {}}, nil
	})
	require.Equal(t, int32(0), sdk.Call(h, request), h.logs)

	assert.Equal(t, &sdk.Request{
		Observer:   "backlog",
		Target:     sdk.Target{Name: "web", URL: "http://127.0.0.1:8080"},
		ConfigJSON: []byte(`{"threshold":100}`),
		Time:       when,
		State:      []byte{0, 1, 2},
	}, req)
	require.Len(t, h.requests, 1)
	assert.True(t, proto.Equal(&messages.HttpRequest{
		Method: "POST", Url: "/metrics", Headers: map[string]string{"Accept": "text/plain"}, Body: []byte("x"),
		Extract: []string{"/status", ""},
	}, h.requests[0]), "got %v", h.requests[0])
	assert.Equal(t, &sdk.Response{
		StatusCode: 503,
		Header:     map[string]string{"Content-Type": "application/json", "X-A": "1"},
		Body:       []byte(`{"status":"failing"}`),
		Truncated:  true,
		Values:     map[string]string{"/status": `"failing"`, "": `{"status":"failing"}`},
	}, resp)
	require.Len(t, h.emitted, 2)
	assert.True(t, proto.Equal(&messages.PluginObservation{
		TypeSuffix: "threshold",
		Severity:   messages.Severity_SEVERITY_HIGH,
		Subject:    "web",
		Payload:    []byte(`{"value":3}`),
		Schema:     "example.v1",
		Labels:     map[string]string{"b": "2", "a": "1", "empty": ""},
		Result:     messages.Result_RESULT_FAILED,
		Error:      "3 is over 2",
	}, h.emitted[0]), "got %v", h.emitted[0])
	assert.True(t, proto.Equal(&messages.PluginObservation{}, h.emitted[1]), "zero fields are left out: unspecified, as old plugins send")
}

// TestSDKEnumsMatchTheProto: the SDK's severities and results are the
// proto's numbers, and name every value the proto has.
func TestSDKEnumsMatchTheProto(t *testing.T) {
	severities := map[sdk.Severity]messages.Severity{
		0:                    messages.Severity_SEVERITY_UNSPECIFIED,
		sdk.SeverityInfo:     messages.Severity_SEVERITY_INFO,
		sdk.SeverityLow:      messages.Severity_SEVERITY_LOW,
		sdk.SeverityMedium:   messages.Severity_SEVERITY_MEDIUM,
		sdk.SeverityHigh:     messages.Severity_SEVERITY_HIGH,
		sdk.SeverityCritical: messages.Severity_SEVERITY_CRITICAL,
	}
	assert.Len(t, severities, len(messages.Severity_name))
	for sev, want := range severities {
		assert.Equal(t, int32(want), int32(sev), want.String())
	}
	results := map[sdk.Result]messages.Result{
		0:                 messages.Result_RESULT_UNSPECIFIED,
		sdk.ResultOK:      messages.Result_RESULT_OK,
		sdk.ResultFailed:  messages.Result_RESULT_FAILED,
		sdk.ResultTimeout: messages.Result_RESULT_TIMEOUT,
		sdk.ResultError:   messages.Result_RESULT_ERROR,
	}
	assert.Len(t, results, len(messages.Result_name))
	for r, want := range results {
		assert.Equal(t, int32(want), int32(r), want.String())
	}
	assert.Equal(t, int32(ABIVersion), int32(sdk.ABIVersion))
}

// The fuzz targets feed the SDK's hand-written decoding what a host could
// pass (seeds in testdata/fuzz/<target>): it must not panic and must stay
// within the memory budget. Whatever the generated types decode the SDK
// must decode to the same, once encoded as a host sends it: known fields
// only. (On raw input the two may differ where the wire is malformed: a
// field of the wrong wire type is an unknown field to the generated code,
// a zero value to the SDK.)

// asSent is m encoded as the host sends it: without unknown fields, at
// any depth, map entries in key order.
func asSent(t *testing.T, m proto.Message) []byte {
	t.Helper()
	var discard func(protoreflect.Message)
	discard = func(m protoreflect.Message) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Message() != nil && !fd.IsList() && !fd.IsMap() {
				discard(v.Message())
			}
			return true
		})
		m.SetUnknown(nil)
	}
	discard(m.ProtoReflect())
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

// sdkRequest is what the SDK's handler was given for the request b, nil
// when polar_observe refused it (2: undecodable).
func sdkRequest(t *testing.T, b []byte) *sdk.Request {
	var got *sdk.Request
	sdkHandle(t, func(r *sdk.Request) ([]sdk.Observation, error) { got = r; return nil, nil })
	switch rc := sdk.Call(&sdkHost{t: t}, b); rc {
	case 0, 2:
	default:
		t.Fatalf("polar_observe returned %d", rc)
	}
	return got
}

func FuzzSDKObserveRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzbudget.Check(t, fuzzbudget.MaxAlloc, func() { sdkRequest(t, b) })
		var want messages.ObserveRequest
		if proto.Unmarshal(b, &want) != nil {
			return
		}
		got := sdkRequest(t, asSent(t, &want))
		if got == nil {
			t.Fatal("the SDK refuses what the host sends")
		}
		wantTime := time.Time{}
		if want.Time != nil {
			wantTime = time.Unix(want.Time.Seconds, int64(want.Time.Nanos)).UTC()
		}
		if got.Observer != want.Observer || got.Target.Name != want.Target.GetName() || got.Target.URL != want.Target.GetUrl() ||
			!bytes.Equal(got.ConfigJSON, want.ConfigJson) || !bytes.Equal(got.State, want.State) || !got.Time.Equal(wantTime) {
			t.Fatalf("decoded %+v, the host sent %v", got, &want)
		}
	})
}

// sdkResponse is what sdk.Get returned when the host answered b.
func sdkResponse(t *testing.T, b []byte) (*sdk.Response, error) {
	var (
		resp *sdk.Response
		err  error
	)
	sdkHandle(t, func(*sdk.Request) ([]sdk.Observation, error) { resp, err = sdk.Get("/"); return nil, nil })
	if rc := sdk.Call(&sdkHost{t: t, response: b}, nil); rc != 0 {
		t.Fatalf("polar_observe returned %d", rc)
	}
	return resp, err
}

func FuzzSDKHTTPResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzbudget.Check(t, fuzzbudget.MaxAlloc, func() { _, _ = sdkResponse(t, b) })
		var want messages.HttpResponse
		if proto.Unmarshal(b, &want) != nil {
			return
		}
		got, err := sdkResponse(t, asSent(t, &want))
		if err != nil {
			t.Fatalf("the SDK refuses what the host sends: %v", err)
		}
		if got.StatusCode != int(want.StatusCode) || !maps.Equal(got.Header, want.Headers) ||
			!bytes.Equal(got.Body, want.Body) || got.Truncated != want.Truncated {
			t.Fatalf("decoded %+v, the host sent %v", got, &want)
		}
	})
}
