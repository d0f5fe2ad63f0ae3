package policymanager

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/actortest"
)

func TestCentralPoliciesAreWatchedBesidePolicyDir(t *testing.T) {
	central := t.TempDir()
	require.NoError(t, WriteCentral(central, "db", []byte(named("db", 5432, "5s")), "deployer"))
	f := setup(t, map[string]string{"web.yaml": good}, func(o *Options) { o.Central = central })
	done := actortest.WaitMessage[*protocol.PoliciesLoaded](t, f.state, nil)
	assert.Equal(t, []string{"db", "web"}, done.Applied, "the cached central policy runs at start")

	byName := map[string]*messages.PolicyOutcome{}
	for _, out := range f.policyEvents(messages.TypePolicyApplied) {
		byName[out.Name] = out
	}
	assert.Equal(t, messages.PolicyOrigin_POLICY_ORIGIN_CENTRAL, byName["db"].Origin)
	assert.Equal(t, "deployer", byName["db"].Issuer)
	assert.Equal(t, CentralFile(central, "db"), byName["db"].File)
	assert.Equal(t, messages.PolicyOrigin_POLICY_ORIGIN_LOCAL, byName["web"].Origin)
	assert.Empty(t, byName["web"].Issuer)

	// Who owns a name is the policy-manager's answer.
	owner := func(name string) *protocol.Owner {
		res, err := f.sys.Root.RequestFuture(f.pid, &protocol.PolicyOwner{Name: name}, actortest.Wait).Result()
		require.NoError(t, err)
		return res.(*protocol.Owner)
	}
	assert.Equal(t, &protocol.Owner{File: filepath.Join(f.dir, "web.yaml"), Line: 3}, owner("web"))
	assert.Equal(t, &protocol.Owner{File: CentralFile(central, "db"), Line: 3}, owner("db"))
	assert.Equal(t, &protocol.Owner{}, owner("none"))

	// A local file taking a central policy's name is refused, naming it.
	f.round(t, func() { f.replace(t, "db-local.yaml", named("db", 6543, "5s")) })
	rejected := f.state.WaitEvent(t, messages.TypePolicyRejected, nil).GetPolicyOutcome()
	assert.Contains(t, rejected.Reason, "the policy name is already used by "+CentralFile(central, "db")+":3")
	assert.Equal(t, messages.PolicyOrigin_POLICY_ORIGIN_LOCAL, rejected.Origin)

	// A new version, then the removal, of the central policy: the local
	// file waiting for the name takes it over.
	require.NoError(t, WriteCentral(central, "db", []byte(named("db", 5432, "7s")), "deployer2"))
	appliedWith := func(file, issuer string) func() bool {
		return func() bool {
			for _, o := range f.policyEvents(messages.TypePolicyApplied) {
				if o.Name == "db" && o.File == file && o.Issuer == issuer {
					return true
				}
			}
			return false
		}
	}
	require.Eventually(t, appliedWith(CentralFile(central, "db"), "deployer2"), actortest.Wait, 5*time.Millisecond,
		"the new central version applied, with its issuer")
	require.NoError(t, RemoveCentral(central, "db"))
	require.Eventually(t, appliedWith(filepath.Join(f.dir, "db-local.yaml"), ""), actortest.Wait, 5*time.Millisecond,
		"the local file took the name over")
	assert.ErrorIs(t, RemoveCentral(central, "db"), fs.ErrNotExist)
	_, err := os.Stat(issuerFile(CentralFile(central, "db")))
	assert.ErrorIs(t, err, fs.ErrNotExist, "its issuer file went with it")
}
