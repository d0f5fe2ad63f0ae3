package observer_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
)

// TestMaxResponseBytes: the daemon's limits.max_response_bytes caps what
// one observation reads of an answer, whatever the policy asks: the
// metrics page of a prometheus observer, the body of an http observer.
// The headers of any answer are capped at 1 MiB.
func TestMaxResponseBytes(t *testing.T) {
	const limit = 4 * yamldoc.KiB
	tests := []struct {
		name    string
		body    string
		header  int // bytes of an extra response header
		section string
		typ     string
		check   func(t *testing.T, ev *messages.Event)
	}{
		{
			name: "a metrics page within the limit", body: "up 1\n" + strings.Repeat("#\n", (int(limit)-5)/2),
			section: "kind: prometheus, prometheus: {}", typ: messages.TypeObservationPrometheus,
			check: func(t *testing.T, ev *messages.Event) {
				obs := ev.GetPrometheus()
				assert.Equal(t, messages.Result_RESULT_OK, obs.Result, obs.Error)
				assert.Len(t, obs.Samples, 1)
			},
		},
		{
			name: "a metrics page over the limit", body: "up 1\n" + strings.Repeat("#\n", int(limit)/2),
			section: "kind: prometheus, prometheus: {}", typ: messages.TypeObservationPrometheus,
			check: func(t *testing.T, ev *messages.Event) {
				obs := ev.GetPrometheus()
				assert.Equal(t, messages.Result_RESULT_FAILED, obs.Result)
				assert.Equal(t, "read metrics: larger than 4096 bytes", obs.Error)
			},
		},
		{
			name: "an http body over the limit", body: strings.Repeat("x", 3*int(limit)),
			section: "kind: http, http: {max_body_bytes: 64KiB}", typ: messages.TypeObservationHTTP,
			check: func(t *testing.T, ev *messages.Event) {
				obs := ev.GetHttp()
				assert.Equal(t, messages.Result_RESULT_OK, obs.Result, obs.Error)
				assert.Equal(t, int64(limit), obs.BodyBytes)
			},
		},
		{
			name: "headers over 1 MiB", body: "ok", header: 2 << 20,
			section: "kind: http, http: {}", typ: messages.TypeObservationHTTP,
			check: func(t *testing.T, ev *messages.Event) {
				obs := ev.GetHttp()
				assert.Equal(t, messages.Result_RESULT_ERROR, obs.Result)
				assert.Contains(t, obs.Error, "server response headers exceeded 1048576 bytes")
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
				if tc.header > 0 {
					w.Header().Set("X-Padding", strings.Repeat("p", tc.header))
				}
				_, _ = io.WriteString(w, tc.body)
			})
			f := setup(t)
			f.maxResponse = limit
			p := parse(t, srv.URL, "", fmt.Sprintf("    - {name: obs, interval: 10s, timeout: 5s, %s}\n", tc.section))
			f.start(t, p, "obs")
			tc.check(t, f.waitEvents(t, tc.typ, 1)[0])
		})
	}
}
