//go:build !wasip1

package sdk

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeHost records what the guest sends, as encoded bytes, and answers
// with the results set in its fields.
type fakeHost struct {
	emitted  [][]byte
	logs     []string
	state    []byte
	requests [][]byte

	emitRC, setStateRC int32
	// response is the encoded HttpResponse of every request; requestRC,
	// when non-zero, replaces it.
	response  []byte
	requestRC int32
	// pending is what http_response copies; nil when nothing is pending.
	pending []byte
}

func (h *fakeHost) Emit(b []byte) int32 {
	if h.emitRC != 0 {
		return h.emitRC
	}
	h.emitted = append(h.emitted, append([]byte(nil), b...))
	return 0
}

func (h *fakeHost) Log(level Level, msg string) {
	h.logs = append(h.logs, fmt.Sprintf("%d %s", level, msg))
}

func (h *fakeHost) SetState(b []byte) int32 {
	if h.setStateRC == 0 {
		h.state = append([]byte(nil), b...)
	}
	return h.setStateRC
}

func (h *fakeHost) HTTPRequest(b []byte) int32 {
	h.requests = append(h.requests, append([]byte(nil), b...))
	if h.requestRC != 0 {
		return h.requestRC
	}
	h.pending = append([]byte{}, h.response...)
	return int32(len(h.pending))
}

func (h *fakeHost) HTTPResponse(buf []byte) int32 {
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

// handle registers h for one test.
func handle(t *testing.T, h Handler) {
	Handle(h)
	t.Cleanup(func() { Handle(nil) })
}

// within runs f as a handler would, with h as the host.
func within(t *testing.T, h *fakeHost, f func()) {
	t.Helper()
	handle(t, func(*Request) ([]Observation, error) { f(); return nil, nil })
	require.Equal(t, resultOK, Call(h, nil), h.logs)
}

func TestCallEmitsWhatTheHandlerReturns(t *testing.T) {
	var got *Request
	handle(t, func(req *Request) ([]Observation, error) {
		got = req
		require.NoError(t, Emit(Observation{TypeSuffix: "early"}))
		return []Observation{{TypeSuffix: "a", Severity: SeverityLow, Result: ResultFailed, Error: "over"}, {TypeSuffix: "b"}}, nil
	})
	h := &fakeHost{}
	want := &Request{
		Observer:   "o",
		Target:     Target{Name: "web", URL: "http://127.0.0.1:8080"},
		ConfigJSON: []byte(`{"threshold":100}`),
		Time:       at,
		State:      []byte("prev"),
	}
	require.Equal(t, resultOK, Call(h, encodeRequest(want)), h.logs)
	assert.Equal(t, want, got)
	assert.Equal(t, [][]byte{
		appendObservation(nil, &Observation{TypeSuffix: "early"}),
		appendObservation(nil, &Observation{TypeSuffix: "a", Severity: SeverityLow, Result: ResultFailed, Error: "over"}),
		appendObservation(nil, &Observation{TypeSuffix: "b"}),
	}, h.emitted)
	assert.Empty(t, pinned, "the request buffer is released once observed")
}

func TestCallFailures(t *testing.T) {
	t.Run("handler error", func(t *testing.T) {
		handle(t, func(*Request) ([]Observation, error) { return nil, errors.New("get /x: boom") })
		h := &fakeHost{}
		assert.Equal(t, resultFailed, Call(h, nil))
		assert.Equal(t, []string{"3 observe: get /x: boom"}, h.logs)
	})
	t.Run("emit refused", func(t *testing.T) {
		handle(t, func(*Request) ([]Observation, error) { return []Observation{{}, {}}, nil })
		h := &fakeHost{emitRC: -1}
		assert.Equal(t, resultFailed, Call(h, nil))
		assert.Equal(t, []string{"3 observe: observation 1 of 2: emit: rejected by the host as invalid"}, h.logs)
	})
	t.Run("no handler", func(t *testing.T) {
		h := &fakeHost{}
		assert.Equal(t, resultNoHandler, Call(h, nil))
		assert.Len(t, h.logs, 1)
	})
	t.Run("undecodable request", func(t *testing.T) {
		handle(t, func(*Request) ([]Observation, error) { t.Fatal("called"); return nil, nil })
		h := &fakeHost{}
		assert.Equal(t, resultBadRequest, Call(h, []byte{0x0a, 0x05}))
		assert.Equal(t, []string{"3 polar_observe: decode ObserveRequest: unexpected EOF"}, h.logs)
		assert.Empty(t, pinned)
	})
	t.Run("foreign buffer", func(t *testing.T) {
		handle(t, func(*Request) ([]Observation, error) { t.Fatal("called"); return nil, nil })
		h := &fakeHost{}
		polar = h
		t.Cleanup(func() { polar = noHost{} })
		assert.Equal(t, resultBadBuffer, observe(8, 8))
		p := alloc(4)
		assert.Equal(t, resultBadBuffer, observe(p, 5), "longer than allocated")
		delete(pinned, p)
		assert.Len(t, h.logs, 2)
	})
	t.Run("request over polar_alloc's bound", func(t *testing.T) {
		handle(t, func(*Request) ([]Observation, error) { t.Fatal("called"); return nil, nil })
		h := &fakeHost{}
		assert.Equal(t, resultBadBuffer, Call(h, make([]byte, maxAlloc+1)))
	})
}

func TestNoHostOutsideCall(t *testing.T) {
	assert.PanicsWithValue(t, noHostMsg, func() { _ = Emit(Observation{}) })
	handle(t, func(*Request) ([]Observation, error) { return nil, nil })
	Call(&fakeHost{}, nil)
	assert.PanicsWithValue(t, noHostMsg, func() { Log(LevelInfo, "x") }, "Call puts the host back")
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
	h := &fakeHost{}
	within(t, h, func() {
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
	})
}

func TestDo(t *testing.T) {
	h := &fakeHost{response: encodeResponse(&Response{StatusCode: 200, Body: []byte("ok")})}
	within(t, h, func() {
		resp, err := Get("/healthz")
		require.NoError(t, err)
		assert.Equal(t, &Response{StatusCode: 200, Body: []byte("ok")}, resp)
		assert.Equal(t, appendHTTPRequest(nil, "GET", &HTTPRequest{URL: "/healthz"}), h.requests[0], "the method defaults to GET")

		h.response = nil
		resp, err = Do(&HTTPRequest{Method: "HEAD", URL: "/"})
		require.NoError(t, err, "an empty response is a valid message")
		assert.Equal(t, &Response{}, resp)

		h.response = encodeResponse(&Response{StatusCode: 503})
		_, err = GetOK("/healthz")
		assert.EqualError(t, err, "http GET /healthz: status 503")

		for rc, want := range map[int32]error{-1: ErrInvalid, -2: ErrNotAllowed, -3: ErrTooManyRequests, -4: ErrRequestFailed, -5: ErrTimeout} {
			h.requestRC = rc
			_, err := Get("http://elsewhere/")
			assert.ErrorIs(t, err, want)
		}
		h.requestRC = -2
		_, err = Get("http://elsewhere/")
		assert.EqualError(t, err, "http GET http://elsewhere/: url not allowed")
	})
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
	for _, tc := range []struct {
		cause  error
		label  string
		result Result
	}{
		{ErrRequestFailed, "error", ResultError},
		{ErrTimeout, "timeout", ResultTimeout},
	} {
		t.Run(tc.label, func(t *testing.T) {
			err := fmt.Errorf("http GET /api/status: %w", tc.cause)
			o := Unobservable("threshold", err)
			assert.Equal(t, Observation{
				TypeSuffix: "threshold",
				Severity:   SeverityHigh,
				Payload:    []byte(`{"error":"http GET /api/status: ` + tc.cause.Error() + `"}`),
				Schema:     "polar.sdk.error.v1",
				Labels:     map[string]string{"result": tc.label},
				Result:     tc.result,
				Error:      "http GET /api/status: " + tc.cause.Error(),
			}, o)
		})
	}
}
