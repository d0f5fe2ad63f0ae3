package observer_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// TestDialChecksTheAddressConnected: every kind that connects to the
// target connects only to addresses inside allowed_targets, whatever the
// host name resolves to, unless the name itself is listed. "localhost" is
// allowed by validation when a loopback prefix is listed, but with only
// ::1/128 listed, its 127.0.0.1 is refused at the connect, before the
// service sees anything.
func TestDialChecksTheAddressConnected(t *testing.T) {
	tests := []struct {
		name    string
		allowed []string
		refused bool
	}{
		{name: "resolved outside the prefixes", allowed: []string{"::1/128"}, refused: true},
		{name: "resolved inside the prefixes", allowed: []string{"127.0.0.0/8"}},
		{name: "a listed name is trusted", allowed: []string{"::1/128", "LocalHost"}},
	}
	kinds := []struct {
		kind, section string
		typ           string
		errOf         func(*messages.Event) (messages.Result, string)
	}{
		{"http", "http: {}", messages.TypeObservationHTTP, func(ev *messages.Event) (messages.Result, string) {
			return ev.GetHttp().GetResult(), ev.GetHttp().GetError()
		}},
		{"prometheus", "prometheus: {}", messages.TypeObservationPrometheus, func(ev *messages.Event) (messages.Result, string) {
			return ev.GetPrometheus().GetResult(), ev.GetPrometheus().GetError()
		}},
		{"tcp", "tcp: {}", messages.TypeObservationTCP, func(ev *messages.Event) (messages.Result, string) {
			return ev.GetTcp().GetResult(), ev.GetTcp().GetError()
		}},
	}
	for _, tc := range tests {
		for _, k := range kinds {
			t.Run(tc.name+"/"+k.kind, func(t *testing.T) {
				srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					_, _ = io.WriteString(w, "up 1\n")
				}))
				var conns atomic.Int64 // every connection the service accepted
				srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
					if s == http.StateNew {
						conns.Add(1)
					}
				}
				srv.Start()
				t.Cleanup(srv.Close)
				_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
				require.NoError(t, err)
				f := setup(t)
				f.allowed = tc.allowed
				p := parse(t, "http://localhost:"+port, "", fmt.Sprintf("    - {name: obs, kind: %s, interval: 1s, %s}\n", k.kind, k.section))
				f.start(t, p, "obs")
				result, msg := k.errOf(f.waitEvents(t, k.typ, 1)[0])
				if !tc.refused {
					assert.Equal(t, messages.Result_RESULT_OK, result, msg)
					return
				}
				assert.Equal(t, messages.Result_RESULT_ERROR, result)
				assert.Contains(t, msg, fmt.Sprintf("dial tcp 127.0.0.1:%s: address 127.0.0.1 is not in allowed_targets [::1/128]", port))
				assert.Zero(t, conns.Load(), "nothing reached the service")
			})
		}
	}
}
