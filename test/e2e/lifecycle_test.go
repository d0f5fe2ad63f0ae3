//go:build integration

package e2e

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
)

// folded is what a consumer knows of one observer from its lifecycle
// events.
type folded struct {
	Status   string
	Revision string
}

// foldLifecycle folds the observer.* events, in sequence order, into a
// table keyed by actor path, as docs/events.md tells consumers to.
func foldLifecycle(evs []*messages.Event) map[string]folded {
	evs = slices.Clone(evs)
	slices.SortFunc(evs, func(a, b *messages.Event) int { return cmp.Compare(a.Sequence, b.Sequence) })
	table := map[string]folded{}
	for _, ev := range evs {
		path := ev.GetObserver().GetActor()
		switch ev.Type {
		case messages.TypeObserverStarted:
			table[path] = folded{protocol.StatusRunning, ev.Policy.GetRevision()}
		case messages.TypeObserverStopped:
			if ev.GetObserver().GetReason() == protocol.StopReasonPaused {
				table[path] = folded{protocol.StatusPaused, ev.Policy.GetRevision()}
			} else {
				delete(table, path)
			}
		case messages.TypeObserverQuarantined:
			table[path] = folded{protocol.StatusQuarantined, ev.Policy.GetRevision()}
		}
	}
	return table
}

// TestLifecycleFoldMatchesState reloads a policy 50 times (an observer
// updated every time, one added and removed in turn, one left alone) and
// folds the lifecycle events a consumer receives: the table equals what
// /v1/state lists. It holds only if each replaced instance's
// observer.stopped comes before its replacement's observer.started. Each
// such stop is in the chain of the policy.applied that caused it: its
// correlation and causation are that event's id.
func TestLifecycleFoldMatchesState(t *testing.T) {
	target := startObservable(t)
	version := func(i int) string {
		observers := fmt.Sprintf("    - {name: moving, kind: http, interval: 1s, timeout: 150ms, http: {path: \"/healthz?v=%d\"}}\n", i) +
			"    - {name: steady, kind: http, interval: 1s, timeout: 150ms, http: {path: /healthz}}\n"
		if i%2 == 1 {
			observers += "    - {name: blinking, kind: http, interval: 1s, timeout: 150ms, http: {path: /healthz}}\n"
		}
		return fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: %q}
  observers:
%s`, target, observers)
	}
	d := newDaemon(t, "")
	dir := filepath.Join(d.dir, "policies")
	write := func(text string) {
		tmp := filepath.Join(dir, ".web.yaml.tmp")
		require.NoError(t, os.WriteFile(tmp, []byte(text), 0o644))
		require.NoError(t, os.Rename(tmp, filepath.Join(dir, "web.yaml")))
	}
	write(version(0))
	c := d.consume(t)
	d.start(t)

	const reloads = 50
	for i := 0; i <= reloads; i++ {
		if i > 0 {
			write(version(i))
		}
		want := revision(t, version(i))
		c.waitWhere(t, messages.TypePolicyApplied, func(ev *messages.Event) bool { return ev.Policy.GetRevision() == want })
	}
	final := revision(t, version(reloads))

	state := func() map[string]folded {
		resp, err := http.Get("http://" + d.admin + "/v1/state")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var s protocol.Snapshot
		if json.NewDecoder(resp.Body).Decode(&s) != nil {
			return nil
		}
		table := map[string]folded{}
		for _, o := range s.Observers {
			table[o.Path] = folded{o.Status, o.Revision}
		}
		return table
	}
	var fold, listed map[string]folded
	lifecycle := func() []*messages.Event {
		var evs []*messages.Event
		for _, typ := range []string{messages.TypeObserverStarted, messages.TypeObserverStopped, messages.TypeObserverQuarantined} {
			evs = append(evs, c.ofType(typ)...)
		}
		return evs
	}
	require.Eventually(t, func() bool {
		fold, listed = foldLifecycle(lifecycle()), state()
		return maps.Equal(fold, listed) && fold["observer/web/moving"].Revision == final
	}, wait, tick, "the folded lifecycle never matched /v1/state")
	assert.Equal(t, map[string]folded{
		"observer/web/moving": {protocol.StatusRunning, final},
		"observer/web/steady": {protocol.StatusRunning, revision(t, version(0))},
	}, fold, "the observers of the last version, steady never restarted")

	applied := map[string]*messages.Event{}
	for _, ev := range c.ofType(messages.TypePolicyApplied) {
		applied[ev.Id] = ev
	}
	replaced := 0
	for _, ev := range c.ofType(messages.TypeObserverStopped) {
		if ev.GetObserver().GetReason() != protocol.StopReasonReplaced {
			continue
		}
		replaced++
		cause := applied[ev.CausationId]
		require.NotNil(t, cause, "the stop of %s is caused by a policy.applied", ev.GetObserver().GetActor())
		assert.Contains(t, cause.GetPolicyOutcome().GetUpdated(), ev.GetObserver().GetObserver(), "which updated it")
		assert.Equal(t, ev.CausationId, ev.CorrelationId, "in its cause's chain")
		assert.Equal(t, cause.Id, cause.CorrelationId, "a policy.applied is a root: its own correlation")
	}
	assert.Equal(t, reloads, replaced, "moving was replaced at every reload")
}
