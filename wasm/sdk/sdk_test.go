//go:build !wasip1

package sdk

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

// fakeHost records what the guest sends and answers with the results set
// in its fields, decoding with the generated types as the daemon does.
type fakeHost struct {
	t        *testing.T
	emitted  []*messages.PluginObservation
	logs     []string
	state    []byte
	requests []*messages.HttpRequest

	emitRC, setStateRC int32
	// response is the encoded HttpResponse of every request; requestRC,
	// when non-zero, replaces it.
	response  []byte
	requestRC int32
	// pending is what http_response copies; nil when nothing is pending.
	pending []byte
}

func (h *fakeHost) emit(b []byte) int32 {
	if h.emitRC != 0 {
		return h.emitRC
	}
	var o messages.PluginObservation
	require.NoError(h.t, proto.Unmarshal(b, &o))
	h.emitted = append(h.emitted, &o)
	return 0
}

func (h *fakeHost) log(level Level, msg string) {
	h.logs = append(h.logs, fmt.Sprintf("%d %s", level, msg))
}

func (h *fakeHost) setState(b []byte) int32 {
	if h.setStateRC == 0 {
		h.state = append([]byte(nil), b...)
	}
	return h.setStateRC
}

func (h *fakeHost) httpRequest(b []byte) int32 {
	var r messages.HttpRequest
	require.NoError(h.t, proto.Unmarshal(b, &r))
	h.requests = append(h.requests, &r)
	if h.requestRC != 0 {
		return h.requestRC
	}
	h.pending = append([]byte{}, h.response...)
	return int32(len(h.pending))
}

func (h *fakeHost) httpResponse(buf []byte) int32 {
	switch {
	case h.pending == nil:
		return -1
	case len(buf) < len(h.pending):
		return -2
	}
	n := copy(buf, h.pending)
	h.pending = nil
	return int32(n)
}

// useHost installs a fake host and handler h for one test.
func useHost(t *testing.T, h Handler) *fakeHost {
	f := &fakeHost{t: t}
	polar, handler = f, h
	t.Cleanup(func() { polar, handler = noHost{}, nil })
	return f
}

// call is what the host does for one call: polar_alloc, write the request,
// polar_observe.
func call(t *testing.T, req *messages.ObserveRequest) int32 {
	b, err := proto.Marshal(req)
	require.NoError(t, err)
	p := alloc(int32(len(b)))
	require.NotZero(t, p)
	copy(pinned[p], b)
	return observe(p, int32(len(b)))
}

func TestObserveEmitsWhatTheHandlerReturns(t *testing.T) {
	var got *Request
	h := useHost(t, func(req *Request) ([]Observation, error) {
		got = req
		require.NoError(t, Emit(Observation{TypeSuffix: "early"}))
		return []Observation{{TypeSuffix: "a", Severity: SeverityLow}, {TypeSuffix: "b"}}, nil
	})
	rc := call(t, &messages.ObserveRequest{
		Observer: "o",
		Target:   &messages.Target{Name: "web", Url: "http://127.0.0.1:8080"},
		State:    []byte("prev"),
	})
	require.Equal(t, resultOK, rc, h.logs)
	assert.Equal(t, "o", got.Observer)
	assert.Equal(t, Target{Name: "web", URL: "http://127.0.0.1:8080"}, got.Target)
	assert.Equal(t, []byte("prev"), got.State)
	require.Len(t, h.emitted, 3)
	assert.Equal(t, "early", h.emitted[0].TypeSuffix)
	assert.Equal(t, "a", h.emitted[1].TypeSuffix)
	assert.Equal(t, messages.Severity_SEVERITY_LOW, h.emitted[1].Severity)
	assert.Equal(t, "b", h.emitted[2].TypeSuffix)
	assert.Empty(t, pinned, "the request buffer is released once observed")
}

func TestObserveFailures(t *testing.T) {
	t.Run("handler error", func(t *testing.T) {
		h := useHost(t, func(*Request) ([]Observation, error) { return nil, errors.New("get /x: boom") })
		assert.Equal(t, resultFailed, call(t, &messages.ObserveRequest{}))
		assert.Equal(t, []string{"3 observe: get /x: boom"}, h.logs)
	})
	t.Run("emit refused", func(t *testing.T) {
		h := useHost(t, func(*Request) ([]Observation, error) { return []Observation{{}, {}}, nil })
		h.emitRC = -2
		assert.Equal(t, resultFailed, call(t, &messages.ObserveRequest{}))
		assert.Equal(t, []string{"3 observe: observation 1 of 2: emit: too many emits in this call"}, h.logs)
	})
	t.Run("no handler", func(t *testing.T) {
		h := useHost(t, nil)
		assert.Equal(t, resultNoHandler, call(t, &messages.ObserveRequest{}))
		assert.Len(t, h.logs, 1)
	})
	t.Run("undecodable request", func(t *testing.T) {
		h := useHost(t, func(*Request) ([]Observation, error) { t.Fatal("called"); return nil, nil })
		p := alloc(2)
		copy(pinned[p], []byte{0x0a, 0x05})
		assert.Equal(t, resultBadRequest, observe(p, 2))
		assert.Len(t, h.logs, 1)
		assert.Empty(t, pinned)
	})
	t.Run("foreign buffer", func(t *testing.T) {
		h := useHost(t, func(*Request) ([]Observation, error) { t.Fatal("called"); return nil, nil })
		assert.Equal(t, resultBadBuffer, observe(8, 8))
		p := alloc(4)
		assert.Equal(t, resultBadBuffer, observe(p, 5), "longer than allocated")
		delete(pinned, p)
		assert.Len(t, h.logs, 2)
	})
}

func TestAlloc(t *testing.T) {
	t.Cleanup(func() { clear(pinned) })
	assert.NotZero(t, alloc(0), "an empty request still needs an address")
	assert.Zero(t, alloc(-1))
	assert.Zero(t, alloc(maxAlloc+1))
	a, b := alloc(16), alloc(16)
	assert.NotEqual(t, a, b)
	assert.Len(t, pinned, 3)
}

func TestEmitAndSetStateErrors(t *testing.T) {
	h := useHost(t, nil)
	for rc, want := range map[int32]error{-1: ErrInvalid, -2: ErrTooManyEmits, -3: ErrTooManyBytes} {
		h.emitRC = rc
		assert.ErrorIs(t, Emit(Observation{}), want)
	}
	h.emitRC = -9
	assert.EqualError(t, Emit(Observation{}), "emit: unknown result -9")

	require.NoError(t, SetState([]byte("s")))
	assert.Equal(t, []byte("s"), h.state)
	h.setStateRC = -1
	assert.ErrorIs(t, SetState(make([]byte, 70000)), ErrStateTooLarge)
	assert.EqualError(t, SetState([]byte("x")), "set state of 1 bytes: state too large")
}

func TestDo(t *testing.T) {
	h := useHost(t, nil)
	var err error
	h.response, err = proto.Marshal(&messages.HttpResponse{StatusCode: 200, Body: []byte("ok")})
	require.NoError(t, err)

	resp, err := Get("/healthz")
	require.NoError(t, err)
	assert.Equal(t, &Response{StatusCode: 200, Body: []byte("ok")}, resp)
	assert.Equal(t, "GET", h.requests[0].Method, "the method defaults to GET")
	assert.Equal(t, "/healthz", h.requests[0].Url)

	h.response = nil
	resp, err = Do(&HTTPRequest{Method: "HEAD", URL: "/"})
	require.NoError(t, err, "an empty response is a valid message")
	assert.Equal(t, &Response{}, resp)

	for rc, want := range map[int32]error{-1: ErrInvalid, -2: ErrNotAllowed, -3: ErrTooManyRequests, -4: ErrRequestFailed, -5: ErrTimeout} {
		h.requestRC = rc
		_, err := Get("http://elsewhere/")
		assert.ErrorIs(t, err, want)
	}
	h.requestRC = -2
	_, err = Get("http://elsewhere/")
	assert.EqualError(t, err, "http GET http://elsewhere/: url not allowed")
}

func TestConfig(t *testing.T) {
	type config struct {
		Pointer   string  `json:"pointer"`
		Threshold float64 `json:"threshold"`
	}
	cfg := config{Pointer: "/backlog"}
	require.NoError(t, (&Request{}).Config(&cfg))
	assert.Equal(t, config{Pointer: "/backlog"}, cfg, "no config keeps the defaults")

	require.NoError(t, (&Request{ConfigJSON: []byte(`{"threshold":100}`)}).Config(&cfg))
	assert.Equal(t, config{Pointer: "/backlog", Threshold: 100}, cfg)

	err := (&Request{ConfigJSON: []byte(`{"treshold":100}`)}).Config(&cfg)
	assert.EqualError(t, err, `decode config: json: unknown field "treshold"`)
}

func TestUnobservable(t *testing.T) {
	o := Unobservable("threshold", fmt.Errorf("http GET /api/status: %w", ErrRequestFailed))
	assert.Equal(t, Observation{
		TypeSuffix: "threshold",
		Severity:   SeverityHigh,
		Payload:    []byte(`{"error":"http GET /api/status: ` + ErrRequestFailed.Error() + `"}`),
		Schema:     "polar.sdk.error.v1",
		Labels:     map[string]string{"result": "error"},
	}, o)
}
