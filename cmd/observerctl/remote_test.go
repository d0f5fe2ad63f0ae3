package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
)

func TestRemoteCommand(t *testing.T) {
	cmd, err := remoteCommand("pause", []string{"web/health"})
	require.NoError(t, err)
	assert.Equal(t, "web", cmd.GetPause().GetPolicy())
	assert.Equal(t, "health", cmd.GetPause().GetObserver())
	assert.Len(t, cmd.Id, 36)

	cmd, err = remoteCommand("status", nil)
	require.NoError(t, err)
	assert.NotNil(t, cmd.GetGetState())

	file := filepath.Join(t.TempDir(), "p.yaml")
	require.NoError(t, os.WriteFile(file, []byte("metadata: {name: web}\n"), 0o600))
	cmd, err = remoteCommand("apply", []string{file})
	require.NoError(t, err)
	assert.Equal(t, "web", cmd.GetApplyPolicy().GetName())

	for _, bad := range [][]string{{"pause"}, {"pause", "web"}, {"status", "x"}, {"remove", "../x"}, {"apply", "/nonexistent.yaml"}} {
		_, err := remoteCommand(bad[0], bad[1:])
		assert.Error(t, err, bad)
	}
	assert.Equal(t, exitUsage, remote(t.Context(), []string{"reboot"}, &bytes.Buffer{}, &bytes.Buffer{}))
	assert.Equal(t, exitUsage, remote(t.Context(), []string{"status", "--node", "a", "--group", "b"}, &bytes.Buffer{}, &bytes.Buffer{}))
}

func answer(node string, code messages.ReturnCode, msg string, out []byte) *messages.Event {
	ev := messages.NewEvent(messages.TypeCommandResult)
	ev.Node = node
	ev.Data = &messages.Event_CommandResult{CommandResult: &messages.CommandResult{Code: code, Message: msg, Output: out}}
	return ev
}

func TestRemoteReport(t *testing.T) {
	cmd, err := remoteCommand("status", nil)
	require.NoError(t, err)
	var out bytes.Buffer
	code := report(&out, "apply", cmd, []*messages.Event{
		answer("web-2", messages.ReturnCode_RETURN_CODE_INVALID_POLICY, "/s/web.yaml:7:5: bad\n/s/web.yaml:9:1: worse", nil),
		answer("web-1", messages.ReturnCode_RETURN_CODE_OK, "cached", nil),
	}, []string{"web-1", "web-2", "web-3"}, false)
	assert.Equal(t, exitProblems, code)
	assert.Equal(t, "web-1  applied   cached\n"+
		"web-2  rejected  /s/web.yaml:7:5: bad\n"+
		"                 /s/web.yaml:9:1: worse\n"+
		"web-3  silent    no answer\n"+
		"2 answered, 1 silent (command "+cmd.Id+")\n", out.String())

	out.Reset()
	snap, err := json.Marshal(&protocol.Snapshot{Node: "web-1", PoliciesLoaded: true, Policies: []string{"web"},
		Broker:    protocol.BrokerStatus{Connected: true},
		Observers: []protocol.ObserverSnapshot{{State: "up"}, {State: "up"}, {State: "down"}}, Outbox: &protocol.OutboxSnapshot{Events: 2}})
	require.NoError(t, err)
	code = report(&out, "status", cmd, []*messages.Event{answer("web-1", messages.ReturnCode_RETURN_CODE_OK, "", snap)}, nil, false)
	assert.Equal(t, exitOK, code)
	assert.Equal(t, "NODE   READY  BROKER     POLICIES  OBSERVERS     OUTBOX  REASON\n"+
		"web-1  true   connected  1         1 down, 2 up  2       \n"+
		"1 answered (command "+cmd.Id+")\n", out.String())
}
