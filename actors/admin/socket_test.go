package admin_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/admin"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/actortest"
	"github.com/polar/observerd/test/asuser"
)

// post sends a command over the socket, without failing the test (for
// polling and for goroutines).
func (f *fixture) post(path string) (int, http.Header, []byte, error) {
	resp, err := f.unix.Post(unixBase+path, "", nil)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body, err
}

// results returns the command.result payloads the state-manager was sent.
func (f *fixture) results() []*messages.CommandResult {
	var out []*messages.CommandResult
	for _, ev := range f.state.EventsOf(messages.TypeCommandResult) {
		out = append(out, ev.GetCommandResult())
	}
	return out
}

// resultsBeforeMarker sends a marker command over the socket (later,
// when the rate limit lets it through) and returns the command.result
// events recorded before the marker's. Each request posts its event
// before it answers, so whatever the requests before the marker emitted
// is there.
func (f *fixture) resultsBeforeMarker(t *testing.T) []*messages.CommandResult {
	t.Helper()
	const marker = "/v1/observers/marker/m/observe"
	f.later()
	require.Eventually(t, func() bool {
		code, _, _, err := f.post(marker)
		return err == nil && code == http.StatusOK
	}, actortest.Wait, 20*time.Millisecond, "the marker command was not carried out")
	var got []*messages.CommandResult
	require.Eventually(t, func() bool {
		got = f.results()
		return len(got) > 0 && got[len(got)-1].Target == "marker/m"
	}, actortest.Wait, 5*time.Millisecond, "the marker's command.result did not arrive")
	return got[:len(got)-1]
}

// refused is the value of observerd_admin_requests_refused_total for a
// channel and a reason.
func (f *fixture) refused(t *testing.T, ch, reason string) float64 {
	t.Helper()
	families, err := f.reg.Gather()
	require.NoError(t, err)
	for _, mf := range families {
		if mf.GetName() != "observerd_admin_requests_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["channel"] == ch && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestSocketServesTheWholeAPI(t *testing.T) {
	f := setup(t, true)
	code, _, body := do(t, f.unix, http.MethodGet, unixBase+"/v1/state", nil)
	assert.Equal(t, http.StatusOK, code, string(body))
	assert.Contains(t, string(body), `"node": "node-1"`)

	// A command, recorded with its caller: this process, as root.
	code, _, body = do(t, f.unix, http.MethodPost, unixBase+"/v1/observers/web/health/pause", nil)
	require.Equal(t, http.StatusOK, code, string(body))
	var res messages.CommandResult
	require.NoError(t, json.Unmarshal(body, &res), string(body))
	assert.True(t, res.Ok)
	assert.Equal(t, "web/health", res.Target)
	want := &messages.Caller{Channel: "unix", Uid: int64(os.Getuid()), Gid: int64(os.Getgid()), Pid: int64(os.Getpid()), User: "root"}
	assertCaller(t, want, res.Caller)
	actortest.WaitMessage(t, f.task, func(p *protocol.Pause) bool { return p.Policy == "web" && p.Observer == "health" })
	ev := f.state.WaitEvent(t, messages.TypeCommandResult, nil)
	assertCaller(t, want, ev.GetCommandResult().GetCaller())

	// Not done: 409 with why, recorded all the same.
	f.task.Respond(func(any) any { return &protocol.CommandDone{Err: fmt.Errorf(`policy "web" has no observer "nope"`)} })
	code, _, body = do(t, f.unix, http.MethodPost, unixBase+"/v1/observers/web/nope/resume", nil)
	assert.Equal(t, http.StatusConflict, code)
	assert.Contains(t, string(body), `policy \"web\" has no observer \"nope\"`)
	require.Eventually(t, func() bool { return len(f.results()) == 2 }, actortest.Wait, 5*time.Millisecond)
}

func assertCaller(t *testing.T, want, got *messages.Caller) {
	t.Helper()
	require.NotNil(t, got, "no caller recorded")
	assert.Equal(t, want.GetChannel(), got.GetChannel())
	assert.Equal(t, want.GetUid(), got.GetUid())
	assert.Equal(t, want.GetGid(), got.GetGid())
	assert.Equal(t, want.GetPid(), got.GetPid())
	assert.Equal(t, want.GetUser(), got.GetUser())
}

func TestSocketModeAndGroup(t *testing.T) {
	var dir string
	f := setup(t, true, func(o *admin.Options) {
		dir = filepath.Join(filepath.Dir(o.Socket), "run", "observerd")
		o.Socket, o.SocketGroup = filepath.Join(dir, "admin.sock"), "65534"
	})
	st, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeDir|0o755, st.Mode(), "the missing directory is created, reachable by the group")
	st, err = os.Lstat(f.socket)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeSocket|0o660, st.Mode())
	assert.EqualValues(t, 65534, st.Sys().(*syscall.Stat_t).Gid, "admin.socket_group")
}

func TestSocketReplacesAStaleOne(t *testing.T) {
	dir := socketDir(t)
	path := filepath.Join(dir, "admin.sock")
	// What a daemon killed with SIGKILL leaves: a socket nothing serves.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	ln.SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())
	_, err = net.Dial("unix", path)
	require.ErrorIs(t, err, syscall.ECONNREFUSED, "a stale socket")

	f := setup(t, true, func(o *admin.Options) { o.Socket = path })
	code, _, _ := do(t, f.unix, http.MethodGet, unixBase+"/healthz", nil)
	assert.Equal(t, http.StatusOK, code)
}

func TestTCPRefusesCommands(t *testing.T) {
	f := setup(t, true)
	for _, method := range []string{http.MethodPost, http.MethodGet, http.MethodPut} {
		for _, path := range []string{"/v1/observers/web/health/pause", "/v1/observers/web/health/resume", "/v1/observers/web/health/observe", "/v1/observers/"} {
			t.Run(method+" "+path, func(t *testing.T) {
				code, header, body := do(t, client, method, f.base+path, nil)
				assert.Equal(t, http.StatusForbidden, code)
				assert.Equal(t, "application/json", header.Get("Content-Type"))
				assert.JSONEq(t, `{"error": "observer commands go through the admin socket (admin.socket), not admin.listen: use observerctl, which finds the socket in the daemon's config"}`, string(body))
			})
		}
	}
	assert.Empty(t, f.resultsBeforeMarker(t), "a refused command emits nothing")
	assert.Len(t, f.task.Messages(), 1, "only the marker reached the task-manager")
	assert.Equal(t, 12.0, f.refused(t, "tcp", "command over tcp"))
}

func TestHostAndOrigin(t *testing.T) {
	f := setup(t, true)
	port := strings.TrimPrefix(f.base, "http://127.0.0.1")
	tests := []struct {
		name   string
		header map[string]string
		code   int
	}{
		{"as dialled", nil, http.StatusOK},
		{"localhost", map[string]string{"Host": "localhost" + port}, http.StatusOK},
		{"localhost without a port, any case", map[string]string{"Host": "LocalHost"}, http.StatusOK},
		{"another loopback address", map[string]string{"Host": "127.1.2.3"}, http.StatusOK},
		{"IPv6 loopback", map[string]string{"Host": "[::1]" + port}, http.StatusOK},
		{"IPv6 loopback without a port", map[string]string{"Host": "[::1]"}, http.StatusOK},
		{"a loopback origin", map[string]string{"Origin": "http://localhost:3000"}, http.StatusOK},
		{"a loopback https origin", map[string]string{"Origin": "https://127.0.0.1"}, http.StatusOK},
		{"a rebound name", map[string]string{"Host": "attacker.example" + port}, http.StatusMisdirectedRequest},
		{"a rebound name without a port", map[string]string{"Host": "attacker.example"}, http.StatusMisdirectedRequest},
		{"a name that only starts like loopback", map[string]string{"Host": "127.0.0.1.nip.io" + port}, http.StatusMisdirectedRequest},
		{"localhost as a subdomain", map[string]string{"Host": "localhost.attacker.example"}, http.StatusMisdirectedRequest},
		{"a routable address", map[string]string{"Host": "10.0.0.1" + port}, http.StatusMisdirectedRequest},
		{"a foreign origin", map[string]string{"Origin": "https://attacker.example"}, http.StatusForbidden},
		{"a foreign origin on a loopback port", map[string]string{"Origin": "http://attacker.example" + port}, http.StatusForbidden},
		{"an opaque origin", map[string]string{"Origin": "null"}, http.StatusForbidden},
		{"a file origin", map[string]string{"Origin": "file://"}, http.StatusForbidden},
	}
	refused := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.state.Messages())
			code, _, body := do(t, client, http.MethodGet, f.base+"/v1/state", tt.header)
			assert.Equal(t, tt.code, code, string(body))
			if tt.code != http.StatusOK {
				refused++
				assert.Contains(t, string(body), `"error"`)
				// /v1/state asks the state-manager before it answers.
				assert.Len(t, f.state.Messages(), before, "a refused request reached the handler")
			}
		})
	}
	assert.Equal(t, float64(refused), f.refused(t, "tcp", "foreign host")+f.refused(t, "tcp", "foreign origin"))

	// A foreign origin is refused on the socket too.
	code, _, _ := do(t, f.unix, http.MethodPost, unixBase+"/v1/observers/web/health/pause", map[string]string{"Origin": "https://attacker.example"})
	assert.Equal(t, http.StatusForbidden, code)
	assert.Empty(t, f.resultsBeforeMarker(t))
}

func TestCommandsAreCheckedBeforeAnythingIsDone(t *testing.T) {
	f := setup(t, true)
	tests := []struct {
		path string
		code int
	}{
		{"/v1/observers/Web/health/pause", http.StatusBadRequest},
		{"/v1/observers/web/health%2F..%2Fx/pause", http.StatusBadRequest},
		{"/v1/observers/web/" + strings.Repeat("a", 64) + "/pause", http.StatusBadRequest},
		{"/v1/observers/-web/health/pause", http.StatusBadRequest},
		{"/v1/observers/web/health%00/pause", http.StatusBadRequest},
		{"/v1/observers/web/he%20alth/resume", http.StatusBadRequest},
		{"/v1/observers/web/health/explode", http.StatusNotFound},
		{"/v1/observers/web/health", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, _, body := do(t, f.unix, http.MethodPost, unixBase+tt.path, nil)
			assert.Equal(t, tt.code, code, string(body))
			assert.NotContains(t, string(body), "aaaa", "the name is not echoed")
		})
	}
	// A body is refused: commands take none.
	resp, err := f.unix.Post(unixBase+"/v1/observers/web/health/pause", "application/json", strings.NewReader(`{"x": 1}`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)

	assert.Empty(t, f.resultsBeforeMarker(t), "a refused command emits nothing")
	assert.Len(t, f.task.Messages(), 1, "only the marker reached the task-manager")
	assert.Equal(t, 6.0, f.refused(t, "unix", "invalid name"))
	assert.Equal(t, 1.0, f.refused(t, "unix", "unknown command"))
}

func TestCommandsAreRateLimited(t *testing.T) {
	f := setup(t, true)
	// Send until the limit refuses, from 8 clients at once, while the
	// admin's clock stands still: exactly the burst is carried out.
	var (
		ok, limited atomic.Int64
		wg          sync.WaitGroup
		refusal     sync.Once
		header      http.Header
		body        []byte
	)
	for range 8 {
		wg.Go(func() {
			for limited.Load() < 10 {
				code, h, b, err := f.post("/v1/observers/web/health/observe")
				if err != nil {
					t.Error(err)
					return
				}
				switch code {
				case http.StatusOK:
					ok.Add(1)
				case http.StatusTooManyRequests:
					limited.Add(1)
					refusal.Do(func() { header, body = h, b })
				default:
					t.Errorf("unexpected %d", code)
					return
				}
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int64(20), ok.Load(), "the burst")
	assert.Equal(t, "1", header.Get("Retry-After"))
	assert.Contains(t, string(body), "too many commands: at most 10 a second (bursts of 20)")
	assert.Equal(t, float64(limited.Load()), f.refused(t, "unix", "rate limited"))

	// A second gives 10 more.
	f.clock.Advance(time.Second)
	for i := range 11 {
		code, _, _, err := f.post("/v1/observers/web/health/observe")
		require.NoError(t, err)
		if i < 10 {
			assert.Equal(t, http.StatusOK, code, "command %d of the second", i)
		} else {
			assert.Equal(t, http.StatusTooManyRequests, code, "one more than the rate")
		}
	}
	assert.Len(t, f.resultsBeforeMarker(t), 30, "one command.result per command carried out, none for the refused")
}

func TestAHugeRequestLineIsRefusedBeforeAnyHandler(t *testing.T) {
	f := setup(t, true)
	huge := strings.Repeat("a", 900<<10)
	for _, tt := range []struct{ network, addr, request string }{
		{"tcp", strings.TrimPrefix(f.base, "http://"), "GET /v1/state?" + huge},
		{"unix", f.socket, "GET /v1/state?" + huge},
		{"unix", f.socket, "POST /v1/observers/web/" + huge + "/pause"},
	} {
		t.Run(tt.network+" "+tt.request[:20], func(t *testing.T) {
			before := len(f.state.Messages())
			c, err := net.Dial(tt.network, tt.addr)
			require.NoError(t, err)
			defer c.Close()
			// The server stops reading at its limit: the write may fail.
			go func() { _, _ = io.WriteString(c, tt.request+" HTTP/1.1\r\nHost: localhost\r\n\r\n") }()
			require.NoError(t, c.SetReadDeadline(time.Now().Add(actortest.Wait)))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
			assert.Len(t, f.state.Messages(), before, "the request reached a handler")
		})
	}
	assert.Empty(t, f.resultsBeforeMarker(t))
}

// clientResult is what TestHelperSocketClient reports.
type clientResult struct {
	Code int
	Body string
	Err  string
	Pid  int
}

// TestHelperSocketClient is a client of the socket run as another user by
// TestSocketPeers: it sends ADMIN_METHOD ADMIN_PATH to ADMIN_SOCKET.
func TestHelperSocketClient(t *testing.T) {
	if !asuser.Child() {
		t.Skip("a client run as another user by TestSocketPeers")
	}
	r := clientResult{Pid: os.Getpid()}
	req, err := http.NewRequest(os.Getenv("ADMIN_METHOD"), unixBase+os.Getenv("ADMIN_PATH"), nil)
	require.NoError(t, err)
	resp, err := unixClient(os.Getenv("ADMIN_SOCKET")).Do(req)
	if err != nil {
		r.Err = err.Error()
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r.Code, r.Body = resp.StatusCode, string(body)
	}
	asuser.Report(t, r)
}

// TestSocketPeers: who may use the socket, with real processes of another
// user (nobody, 65534) at the other end.
func TestSocketPeers(t *testing.T) {
	const nobody = 65534
	reachable := func(o *admin.Options) { require.NoError(t, os.Chmod(filepath.Dir(o.Socket), 0o755)) }
	asNobody := func(t *testing.T, f *fixture, method, path string) clientResult {
		t.Helper()
		cmd := asuser.Command(t, nobody, nobody, "TestHelperSocketClient",
			"ADMIN_SOCKET="+f.socket, "ADMIN_METHOD="+method, "ADMIN_PATH="+path)
		var r clientResult
		asuser.Result(t, cmd, &r)
		return r
	}

	t.Run("outside the socket's group: the mode keeps it out", func(t *testing.T) {
		f := setup(t, true, reachable)
		r := asNobody(t, f, http.MethodPost, "/v1/observers/web/health/pause")
		assert.Contains(t, r.Err, "permission denied")
		assert.Empty(t, f.resultsBeforeMarker(t))
	})

	t.Run("outside the group, through a socket others may write: refused by its credentials", func(t *testing.T) {
		f := setup(t, true, reachable)
		require.NoError(t, os.Chmod(f.socket, 0o666))
		for _, path := range []string{"/v1/observers/web/health/pause", "/v1/state"} {
			method := http.MethodPost
			if path == "/v1/state" {
				method = http.MethodGet
			}
			r := asNobody(t, f, method, path)
			assert.Equal(t, http.StatusForbidden, r.Code, r.Err)
			assert.Contains(t, r.Body, fmt.Sprintf("uid %d may not use the admin socket: it is for root, the daemon's user and the members of group %d (admin.socket_group)", nobody, os.Getegid()))
		}
		assert.Empty(t, f.resultsBeforeMarker(t))
		assert.Equal(t, 2.0, f.refused(t, "unix", "peer"))
	})

	t.Run("in the socket's group: served, and recorded as the caller", func(t *testing.T) {
		f := setup(t, true, reachable, func(o *admin.Options) { o.SocketGroup = "nogroup" })
		r := asNobody(t, f, http.MethodPost, "/v1/observers/web/health/pause")
		require.Equal(t, http.StatusOK, r.Code, "%s %s", r.Err, r.Body)
		var res messages.CommandResult
		require.NoError(t, json.Unmarshal([]byte(r.Body), &res))
		want := &messages.Caller{Channel: "unix", Uid: nobody, Gid: nobody, Pid: int64(r.Pid), User: "nobody"}
		assertCaller(t, want, res.Caller)
		got := f.resultsBeforeMarker(t)
		require.Len(t, got, 1)
		assertCaller(t, want, got[0].Caller)
	})
}
