//go:build integration

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// TestObservationEndToEnd runs observerd with one http policy against
// bin/observable and checks what a consumer of a bound queue receives:
// lifecycle events, observations with every envelope field set, the AMQP
// properties and CloudEvents headers, and consecutive sequences from 1.
func TestObservationEndToEnd(t *testing.T) {
	target := startObservable(t)
	d := newDaemon(t, target)
	c := d.consume(t)
	p := d.start(t)

	_, started := c.waitFor(t, messages.TypeDaemonStarted)
	appliedDel, applied := c.waitFor(t, messages.TypePolicyApplied)
	_, obsStarted := c.waitFor(t, messages.TypeObserverStarted)
	del, obs := c.waitFor(t, messages.TypeObservationHTTP)

	assert.Equal(t, "observerd://e2e-node.example/supervisor", started.Source)
	assert.Equal(t, "web", applied.GetPolicyOutcome().GetName())
	assert.Equal(t, []string{"health"}, applied.GetPolicyOutcome().GetAdded())
	assert.Equal(t, applied.Id, obsStarted.CorrelationId, "observer.started correlates with the policy that tasked it")
	// Roots carry their own id as correlation, in the body and the AMQP
	// property, and no cause.
	for _, root := range []*messages.Event{started, applied} {
		assert.Equal(t, root.Id, root.CorrelationId, root.Type)
		assert.Empty(t, root.CausationId, root.Type)
	}
	assert.Equal(t, applied.Id, appliedDel.CorrelationId)

	// The envelope, field by field.
	id, err := uuid.Parse(obs.Id)
	require.NoError(t, err)
	assert.Equal(t, uuid.Version(7), id.Version())
	assert.Equal(t, messages.TypeObservationHTTP, obs.Type)
	assert.Equal(t, "observerd://e2e-node.example/observer/web/health", obs.Source)
	assert.Equal(t, "web", obs.Subject)
	assert.WithinDuration(t, time.Now(), obs.Time.AsTime(), time.Minute)
	assert.Equal(t, "e2e-node.example", obs.Node)
	assert.NotZero(t, obs.Sequence)
	assert.Equal(t, messages.Category_CATEGORY_OBSERVATION, obs.Category)
	assert.Equal(t, messages.Severity_SEVERITY_INFO, obs.Severity)
	assert.Equal(t, applied.Id, obs.CorrelationId)
	assert.Equal(t, applied.Id, obs.CausationId)
	require.NotEmpty(t, obs.Provenance)
	assert.Equal(t, "observerd", obs.Provenance[0].Service)
	assert.Equal(t, "e2e-node.example", obs.Provenance[0].Node)
	assert.Equal(t, "web", obs.Policy.GetName())
	assert.Equal(t, applied.Policy.GetRevision(), obs.Policy.GetRevision())
	assert.NotEmpty(t, obs.Policy.GetRevision())
	h := obs.GetHttp()
	require.NotNil(t, h)
	assert.Equal(t, target+"/healthz", h.Url)
	assert.Equal(t, "GET", h.Method)
	assert.Equal(t, int32(200), h.StatusCode)
	assert.Equal(t, messages.Result_RESULT_OK, h.Result)
	assert.Positive(t, h.Latency.AsDuration())

	// AMQP properties and CloudEvents headers.
	assert.Equal(t, obs.Id, del.MessageId)
	assert.Equal(t, obs.Type, del.Type)
	assert.Equal(t, "observerd", del.AppId)
	assert.Equal(t, obs.CorrelationId, del.CorrelationId)
	assert.Equal(t, "application/protobuf", del.ContentType)
	assert.Equal(t, uint8(2), del.DeliveryMode, "persistent")
	assert.Equal(t, obs.Time.AsTime().Unix(), del.Timestamp.Unix())
	assert.Equal(t, "observation.http.e2e-node_example", del.RoutingKey)
	assert.Equal(t, "1.0", del.Headers["cloudEvents:specversion"])
	assert.Equal(t, obs.Id, del.Headers["cloudEvents:id"])
	assert.Equal(t, obs.Source, del.Headers["cloudEvents:source"])
	assert.Equal(t, obs.Type, del.Headers["cloudEvents:type"])
	assert.Equal(t, obs.Subject, del.Headers["cloudEvents:subject"])
	assert.Equal(t, fmt.Sprintf("%020d", obs.Sequence), del.Headers["cloudEvents:sequence"], "orders as a string")
	assert.Equal(t, "type.googleapis.com/polar.observer.v1.Event", del.Headers["cloudEvents:dataschema"])
	ceTime, err := time.Parse(time.RFC3339, del.Headers["cloudEvents:time"].(string))
	require.NoError(t, err)
	assert.True(t, ceTime.Equal(obs.Time.AsTime()))

	// The up transition, caused by an observation.
	_, change := c.waitFor(t, messages.TypeStateChanged)
	assert.Equal(t, messages.ObserverState_OBSERVER_STATE_UP, change.GetStateChange().GetNewState())
	assert.NotEmpty(t, change.CausationId)

	// Sequences: 1, 2, 3, ... with no gap and no duplicate id.
	require.Eventually(t, func() bool { return len(c.ofType(messages.TypeObservationHTTP)) >= 5 }, wait, tick)
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.exitCode(t, 20*time.Second), "SIGTERM stops cleanly")
	c.waitFor(t, messages.TypeDaemonStopping)
	c.waitFor(t, messages.TypeObserverStopped)
	_, evs := c.snapshot()
	assertConsecutive(t, evs, 1)
}

// assertConsecutive checks that evs hold sequences from..n exactly once
// each, in order, with distinct ids.
func assertConsecutive(t *testing.T, evs []*messages.Event, from uint64) {
	t.Helper()
	ids := map[string]bool{}
	for i, ev := range evs {
		require.NotNil(t, ev, "undecodable delivery %d", i)
		require.Equal(t, from+uint64(i), ev.Sequence, "delivery %d (%s)", i, ev.Type)
		require.False(t, ids[ev.Id], "duplicate id %s", ev.Id)
		ids[ev.Id] = true
	}
}

// TestSequenceSurvivesRestart stops the daemon and starts it again on the
// same state_dir: the sequence goes on where it stopped.
func TestSequenceSurvivesRestart(t *testing.T) {
	target := startObservable(t)
	d := newDaemon(t, target)
	c := d.consume(t)

	p := d.start(t)
	c.waitFor(t, messages.TypeObservationHTTP)
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.exitCode(t, 20*time.Second))
	_, first := c.snapshot()
	require.NotEmpty(t, first)
	last := first[len(first)-1].Sequence

	p = d.start(t)
	require.Eventually(t, func() bool {
		_, evs := c.snapshot()
		return len(evs) > len(first)+2
	}, wait, tick)
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.exitCode(t, 20*time.Second))
	_, all := c.snapshot()
	assertConsecutive(t, all, 1)
	assert.Equal(t, messages.TypeDaemonStarted, all[len(first)].Type)
	assert.Equal(t, last+1, all[len(first)].Sequence)
}

// TestTLSNegatives: an untrusted CA and a wrong server name never connect,
// say why in the log, keep retrying, and /readyz answers 503 with the
// reason.
func TestTLSNegatives(t *testing.T) {
	cases := []struct {
		name, tls, logs string
	}{
		{"untrusted CA", `{ca_file: "` + node.UntrustedCAFile + `"}`, "certificate signed by unknown authority"},
		{"wrong server name", `{ca_file: "` + node.CAFile + `", server_name: wrong.example}`, "not wrong.example"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newDaemon(t, "", withTLS(tc.tls))
			p := d.start(t)
			require.Eventually(t, func() bool {
				return strings.Count(p.out.String(), "broker connection failed") >= 2
			}, wait, tick, "the daemon keeps retrying")
			assert.Contains(t, p.out.String(), tc.logs)
			assert.NotContains(t, p.out.String(), "broker connected")
			var body string
			require.Eventually(t, func() bool {
				var code int
				code, body = d.readyz()
				return code == 503 && strings.Contains(body, tc.logs)
			}, wait, tick, "readyz: %s", body)
			assert.Contains(t, body, "broker not connected")
			p.signal(t, syscall.SIGTERM)
			require.Equal(t, 0, p.exitCode(t, 20*time.Second))
		})
	}
}

// TestExternalAuth: with auth: external the daemon logs in with its
// client certificate and delivers as with a password.
func TestExternalAuth(t *testing.T) {
	target := startObservable(t)
	d := newDaemon(t, target, withExternalAuth())
	c := d.consume(t)
	p := d.start(t)
	_, obs := c.waitFor(t, messages.TypeObservationHTTP)
	assert.Equal(t, messages.Result_RESULT_OK, obs.GetHttp().GetResult())
	require.Eventually(t, func() bool { code, _ := d.readyz(); return code == 200 }, wait, tick)
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.exitCode(t, 20*time.Second))
}

// TestEscalationExitsNonZero: an actor that keeps failing (the admin
// actor, its port taken) escalates, and the daemon exits non-zero.
func TestEscalationExitsNonZero(t *testing.T) {
	taken := freeAddrHeld(t)
	d := newDaemon(t, "", withAdmin(taken))
	p := d.start(t)
	code := p.exitCode(t, wait)
	assert.Equal(t, 1, code)
	out := p.out.String()
	assert.Contains(t, out, "escalating")
	assert.Contains(t, out, "admin listen")
	assert.GreaterOrEqual(t, strings.Count(out, messages.TypeObserverRestarted), 4, "restarted with backoff before escalating")
}

// TestCheckConfig: --check-config prints every problem with file:line and
// exits non-zero, and accepts a good set-up.
func TestCheckConfig(t *testing.T) {
	d := newDaemon(t, "http://127.0.0.1:1")
	p := start(t, "observerd", "--check-config", "--config", d.config)
	require.Equal(t, 0, p.exitCode(t, wait), p.out.String())

	bad := filepath.Join(d.dir, "policies", "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("apiVersion: observer.polar/v1\nkind: ObservationPolicy\nmetadata: {name: bad}\nspec:\n  target: {name: x, url: \"http://10.1.2.3\"}\n  observers:\n    - {name: a, kind: http, interval: -1s, http: {path: /}}\n"), 0o644))
	require.NoError(t, os.WriteFile(d.config, append(mustRead(t, d.config), []byte("bogus_key: 1\n")...), 0o600))
	p = start(t, "observerd", "--check-config", "--config", d.config)
	require.Equal(t, 1, p.exitCode(t, wait))
	out := p.out.String()
	assert.Contains(t, out, d.config+":")
	assert.Contains(t, out, "bogus_key")
	assert.Contains(t, out, bad+":5:", "the policies are checked even when the config has problems")
	assert.Contains(t, out, bad+":7:")
}

// TestSIGHUPAppliesTheLogLevel: SIGHUP re-reads the config, applies the
// new log level and outbox bound without a restart and names what needs
// one.
func TestSIGHUPAppliesTheLogLevel(t *testing.T) {
	d := newDaemon(t, startObservable(t), withOutbox("{max_bytes: 64MiB}"))
	cfg := string(mustRead(t, d.config))
	require.NoError(t, os.WriteFile(d.config, []byte(strings.Replace(cfg, "level: debug", "level: info", 1)), 0o600))
	p := d.start(t)
	require.Eventually(t, func() bool { return strings.Contains(p.out.String(), "broker connected") }, wait, tick)
	assert.NotContains(t, p.out.String(), `"level":"debug"`)

	cfg = strings.Replace(cfg, "confirm_window: 64", "confirm_window: 32", 1)
	cfg = strings.Replace(cfg, "outbox: {max_bytes: 64MiB}", "outbox: {max_bytes: 32MiB, when_full: block}", 1)
	moved := adminAddr(t)
	cfg = strings.Replace(cfg, fmt.Sprintf("listen: %q", d.admin), fmt.Sprintf("listen: %q", moved), 1)
	require.NoError(t, os.WriteFile(d.config, []byte(cfg), 0o600))
	p.signal(t, syscall.SIGHUP)
	require.Eventually(t, func() bool { return strings.Contains(p.out.String(), "SIGHUP: config re-read") }, wait, tick)
	assert.Contains(t, p.out.String(), `"need_restart":["broker.confirm_window"]`)
	assert.Contains(t, p.out.String(), `"applied":["log.level","admin.listen","outbox.max_bytes","outbox.when_full"]`)
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + moved + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, wait, tick, "the admin server moved to the new address")
	_, err := http.Get("http://" + d.admin + "/healthz")
	assert.Error(t, err, "the old admin address no longer serves")
	require.Eventually(t, func() bool {
		return strings.Contains(p.out.String(), `"max_bytes":33554432,"drop_oldest":false,`)
	}, wait, tick, "the broker applies the new bound")
	require.Eventually(t, func() bool { return strings.Contains(p.out.String(), `"level":"debug"`) }, wait, tick,
		"debug lines appear without a restart")
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.exitCode(t, 20*time.Second))
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}
