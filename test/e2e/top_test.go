//go:build integration

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// tmuxSession runs command in a detached tmux session of width x height,
// a real terminal, until the test ends.
type tmuxSession struct {
	t    *testing.T
	name string
}

func newTmux(t *testing.T, width, height int, command string) *tmuxSession {
	t.Helper()
	tmux, err := exec.LookPath("tmux")
	require.NoError(t, err, "tmux is missing: make deps installs it")
	s := &tmuxSession{t: t, name: randomName("top-")}
	out, err := exec.Command(tmux, "new-session", "-d", "-s", s.name, "-x", fmt.Sprint(width), "-y", fmt.Sprint(height),
		command).CombinedOutput()
	require.NoError(t, err, "tmux new-session: %s", out)
	t.Cleanup(func() { _ = exec.Command(tmux, "kill-session", "-t", s.name).Run() })
	return s
}

// screen is what a person sees in the session now.
func (s *tmuxSession) screen() string {
	out, err := exec.Command("tmux", "capture-pane", "-p", "-t", s.name).CombinedOutput()
	if err != nil {
		return ""
	}
	return string(out)
}

// waitScreen waits until the screen satisfies ok and returns it.
func (s *tmuxSession) waitScreen(ok func(string) bool, what string) string {
	s.t.Helper()
	var screen string
	require.Eventually(s.t, func() bool { screen = s.screen(); return ok(screen) }, wait, 50*time.Millisecond,
		"%s; the screen:\n%s", what, screen)
	return screen
}

func (s *tmuxSession) alive() bool {
	return exec.Command("tmux", "has-session", "-t", s.name).Run() == nil
}

// TestTop: observerctl top in a real terminal (tmux) shows the broker, the
// outbox, the events and the observers with a quarantined one at the
// top; it keeps within the terminal's size, says so when the daemon is
// down, and quits on q.
func TestTop(t *testing.T) {
	dir := t.TempDir()
	target := startObservable(t)
	d := newDaemon(t, target, withObservers(`    - {name: health, kind: http, interval: 200ms, http: {path: /healthz}}
    - {name: trap, kind: wasm, interval: 1s, timeout: 500ms, wasm: {module: trap.wasm}}
`))
	installPlugins(t, d, buildGuest(t, dir, "trap"))
	c := d.consume(t)
	daemon := d.start(t)
	c.waitWhere(t, messages.TypeObserverQuarantined, func(ev *messages.Event) bool {
		return ev.GetObserver().GetActor() == "observer/web/trap"
	})

	const width, height = 110, 14
	top := newTmux(t, width, height, filepath.Join(bin, "observerctl")+" top --admin http://"+d.admin)
	screen := top.waitScreen(func(s string) bool {
		return strings.Contains(s, "observer/web/trap") && strings.Contains(s, "LATENCY") && strings.Contains(s, "/s accepted") &&
			!strings.Contains(s, "events  -/s") && strings.Contains(s, "connected to")
	}, "top shows the daemon, with a rate")
	t.Logf("observerctl top, %dx%d:\n%s", width, height, screen)

	lines := strings.Split(strings.TrimRight(screen, "\n"), "\n")
	assert.LessOrEqual(t, len(lines), height)
	for _, l := range lines {
		assert.LessOrEqual(t, utf8.RuneCountInString(l), width, "a line wider than the terminal: %q", l)
	}
	assert.Contains(t, screen, "broker  connected to")
	assert.Contains(t, screen, "outbox  ")
	// Trouble first: the quarantined observer is the first row under the
	// header.
	var rows []string
	for i, l := range lines {
		if strings.HasPrefix(l, "OBSERVER ") {
			rows = lines[i+1:]
		}
	}
	require.NotEmpty(t, rows, "no observers' table")
	assert.True(t, strings.HasPrefix(rows[0], "observer/web/trap"), "the quarantined observer first: %q", rows[0])
	assert.Contains(t, rows[0], "quarantined")
	assert.Contains(t, rows[1], "observer/web/health")
	assert.Regexp(t, `\s[0-9.]+(µs|ms|s)\s+[0-9.]+\s`, rows[1], "health's latency, then its rate")

	// The daemon stops: top says it cannot read it, and goes on trying.
	daemon.signal(t, syscall.SIGTERM)
	daemon.exitCode(t, wait)
	screen = top.waitScreen(func(s string) bool { return strings.Contains(s, "cannot read the daemon") }, "top says the daemon is down")
	t.Logf("observerctl top, daemon down:\n%s", screen)
	assert.True(t, top.alive(), "top keeps trying")

	// q quits, and gives the terminal back.
	require.NoError(t, exec.Command("tmux", "send-keys", "-t", top.name, "q").Run())
	require.Eventually(t, func() bool { return !top.alive() }, wait, 50*time.Millisecond, "top did not quit on q")
}

// TestTopNeedsATerminal: without one, top says so and points at status.
func TestTopNeedsATerminal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "observerctl"), "top", "--admin", "http://127.0.0.1:1").CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, 2, exit.ExitCode())
	assert.Contains(t, string(out), "not a terminal (observerctl status prints the state once)")
}
