//go:build integration

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// hostileAdmin (TestHostile/admin): local processes (the observed service, its sidecars,
// a browser's page) try to switch monitoring off or flood the bus through
// the admin API (issue 11, item 4). One daemon serves every subtest; each
// ends with a marker command and checks what was emitted before it.
func hostileAdmin(t *testing.T) {
	target := startObservable(t)
	d := newDaemon(t, target, withObservers(`    - {name: health, kind: http, interval: 200ms, http: {path: /healthz}}
    - {name: port, kind: tcp, interval: 200ms, tcp: {}}
`))
	c := d.consume(t)
	daemon := d.start(t)
	require.Eventually(t, func() bool { code, _ := d.readyz(); return code == http.StatusOK }, wait, tick, "the daemon never became ready")
	tcp := "http://" + d.admin
	sock := socketClient(d.socket)

	// since returns the command.result events that arrived before a marker
	// command (observe web/port, which no subtest sends, with observerctl
	// through whatever channel it uses, retried while the rate limit refuses
	// it) and after the previous marker. Each request posts its event before it answers, and events
	// reach the queue in order: what a request before the marker emitted
	// is there.
	seen := 0
	since := func(t *testing.T) []*messages.CommandResult {
		t.Helper()
		require.Eventually(t, func() bool {
			return start(t, "observerctl", "observe", "--config", d.config, "web/port").exitCode(t, wait) == 0
		}, wait, 200*time.Millisecond, "the marker command was not carried out")
		var evs []*messages.Event
		require.Eventually(t, func() bool {
			evs = c.ofType(messages.TypeCommandResult)
			if len(evs) <= seen {
				return false
			}
			last := evs[len(evs)-1].GetCommandResult()
			return last.Command == "observe" && last.Target == "web/port" && last.Ok
		}, wait, tick, "the marker's command.result did not arrive")
		var out []*messages.CommandResult
		for _, ev := range evs[seen : len(evs)-1] {
			out = append(out, ev.GetCommandResult())
		}
		seen = len(evs)
		return out
	}

	t.Run("a command over loopback TCP is refused and emits nothing", func(t *testing.T) {
		for _, cmd := range []string{"pause", "resume", "observe"} {
			code, body := send(t, http.DefaultClient, http.MethodPost, tcp+"/v1/observers/web/health/"+cmd, nil)
			assert.Equal(t, http.StatusForbidden, code, body)
			assert.Contains(t, body, "observer commands go through the admin socket")
		}
		assert.Empty(t, since(t))
	})

	t.Run("observerctl pauses through the socket, recorded with its caller", func(t *testing.T) {
		me, err := user.Current()
		require.NoError(t, err)
		var pids []int
		for _, cmd := range []string{"pause", "resume"} {
			p := start(t, "observerctl", cmd, "--config", d.config, "web/port")
			require.Equal(t, 0, p.exitCode(t, wait), p.out.String())
			assert.Equal(t, cmd+" web/port: done\n", p.out.String())
			pids = append(pids, p.cmd.Process.Pid)
		}
		got := since(t)
		require.Len(t, got, 2)
		for i, res := range got {
			assert.True(t, res.Ok, res.Message)
			want := &messages.Caller{Channel: "unix", Uid: int64(os.Getuid()), Gid: int64(os.Getgid()), Pid: int64(pids[i]), User: me.Username}
			assert.Equal(t, want.String(), res.GetCaller().String())
			assert.Contains(t, daemon.out.String(), fmt.Sprintf(`"channel":"unix","uid":%d,"gid":%d,"pid":%d,"user":%q`, os.Getuid(), os.Getgid(), pids[i], me.Username),
				"the daemon's log names the caller")
		}
	})

	t.Run("a foreign Host or Origin cannot read the state", func(t *testing.T) {
		port := d.admin[strings.LastIndex(d.admin, ":"):]
		for _, tt := range []struct {
			header map[string]string
			code   int
		}{
			{map[string]string{"Host": "localhost" + port}, http.StatusOK},
			{map[string]string{"Host": "rebound.attacker.example" + port}, http.StatusMisdirectedRequest},
			{map[string]string{"Origin": "https://attacker.example"}, http.StatusForbidden},
		} {
			code, body := send(t, http.DefaultClient, http.MethodGet, tcp+"/v1/state", tt.header)
			assert.Equal(t, tt.code, code, "%v: %s", tt.header, body)
			if tt.code != http.StatusOK {
				assert.NotContains(t, body, d.node, "the state leaked")
			}
		}
	})

	t.Run("a 900 KB path is refused before it is emitted", func(t *testing.T) {
		name := strings.Repeat("a", 900<<10)
		begin := time.Now()
		for range 20 {
			for _, via := range [][2]string{{"tcp", d.admin}, {"unix", d.socket}} {
				code, err := rawRequest(via[0], via[1], "POST /v1/observers/web/"+name+"/pause")
				require.NoError(t, err, via[0])
				assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, code, via[0])
			}
		}
		t.Logf("40 requests of 900 KB refused in %s", time.Since(begin).Round(time.Millisecond))
		assert.Empty(t, since(t))
	})

	t.Run("invalid names are refused before anything is emitted", func(t *testing.T) {
		for _, path := range []string{"Web/port", "web/Port", "web/po%2Frt", "web/" + strings.Repeat("p", 64), "web/port%00", "-web/port", "web/port%0Aforged"} {
			code, body := send(t, sock, http.MethodPost, "http://localhost/v1/observers/"+path+"/pause", nil)
			assert.Equal(t, http.StatusBadRequest, code, "%s: %s", path, body)
		}
		code, _ := send(t, sock, http.MethodPost, "http://localhost/v1/observers/web/port/shutdown", nil)
		assert.Equal(t, http.StatusNotFound, code)
		assert.Empty(t, since(t))
	})

	t.Run("a burst of commands is rate limited", func(t *testing.T) {
		var ok, limited atomic.Int64
		var wg sync.WaitGroup
		begin := time.Now()
		for range 8 {
			wg.Go(func() {
				for i := 0; i < 100 && limited.Load() < 20; i++ {
					code, err := post(sock, "http://localhost/v1/observers/web/health/observe")
					if err != nil {
						t.Error(err)
						return
					}
					switch code {
					case http.StatusOK:
						ok.Add(1)
					case http.StatusTooManyRequests:
						limited.Add(1)
					default:
						t.Errorf("unexpected %d", code)
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(begin)
		t.Logf("%d commands carried out, %d refused with 429 in %s", ok.Load(), limited.Load(), elapsed.Round(time.Millisecond))
		require.Positive(t, limited.Load(), "no command was refused")
		assert.LessOrEqual(t, float64(ok.Load()), 20+10*elapsed.Seconds()+1, "more commands than the rate allows")
		assert.Len(t, since(t), int(ok.Load()), "a command.result per command carried out, none for the refused")
		_, metrics := send(t, http.DefaultClient, http.MethodGet, tcp+"/metrics", nil)
		assert.Regexp(t, `observerd_admin_requests_refused_total\{channel="unix",reason="rate limited"\} [1-9]`, metrics)
	})

	t.Run("a flood of state reads gets 429 while probes and scrapes are answered", func(t *testing.T) {
		// For 2 s, 64 clients, as many as the connection slots, read
		// /v1/state as fast as they can; a prober reads /readyz and
		// /metrics five times a second meanwhile.
		var ok, limited atomic.Int64
		var wg sync.WaitGroup
		flooding := make(chan struct{})
		begin := time.Now()
		for range 64 {
			wg.Go(func() {
				for time.Since(begin) < 2*time.Second {
					code, err := fetch(http.MethodGet, tcp+"/v1/state")
					switch {
					case err != nil:
						t.Error(err)
						return
					case code == http.StatusOK:
						ok.Add(1)
					case code == http.StatusTooManyRequests:
						limited.Add(1)
					default:
						t.Errorf("unexpected %d", code)
						return
					}
				}
			})
		}
		var probes []string
		probed := make(chan struct{})
		go func() {
			defer close(probed)
			pace := time.NewTicker(200 * time.Millisecond) // a prober's period, not a synchronisation
			defer pace.Stop()
			for {
				for _, path := range []string{"/readyz", "/metrics"} {
					code, err := fetch(http.MethodGet, tcp+path)
					probes = append(probes, fmt.Sprintf("%s %d %v", path, code, err))
				}
				select {
				case <-flooding:
					return
				case <-pace.C:
				}
			}
		}()
		wg.Wait()
		elapsed := time.Since(begin)
		close(flooding)
		<-probed
		t.Logf("/v1/state: %d answered, %d refused with 429 in %s; probes: %v", ok.Load(), limited.Load(), elapsed.Round(time.Millisecond), probes)
		require.Positive(t, limited.Load(), "no read was refused")
		assert.LessOrEqual(t, float64(ok.Load()), 40+20*elapsed.Seconds()+1, "more /v1/state answers than the rate allows")
		for _, p := range probes {
			assert.Regexp(t, ` 200 <nil>$`, p, "a probe during the flood")
		}
		_, metrics := send(t, http.DefaultClient, http.MethodGet, tcp+"/metrics", nil)
		assert.Regexp(t, `observerd_admin_requests_refused_total\{channel="tcp",reason="rate limited"\} [1-9]`, metrics)
	})
}

// fetch sends a request on a connection of its own and returns the
// status, failing nothing, for goroutines.
func fetch(method, url string) (int, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, err
	}
	req.Close = true
	resp, err := (&http.Client{Timeout: wait}).Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// socketClient is an HTTP client of the unix socket at path.
func socketClient(path string) *http.Client {
	return &http.Client{Timeout: wait, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

// send sends a request with headers (Host sets the Host) and returns the
// status and body.
func send(t *testing.T, c *http.Client, method, url string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	for k, v := range header {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// post is a POST that fails nothing, for goroutines.
func post(c *http.Client, url string) (int, error) {
	resp, err := c.Post(url, "", nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// rawRequest sends a request line as is and returns the answer's status:
// net/http's client would refuse to send some of them.
func rawRequest(network, addr, line string) (int, error) {
	conn, err := net.Dial(network, addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	// The daemon stops reading at its limit: the write may fail.
	go func() { _, _ = io.WriteString(conn, line+" HTTP/1.1\r\nHost: localhost\r\n\r\n") }()
	if err := conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
