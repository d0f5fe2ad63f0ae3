package admin

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAccess: who may use the socket, by the credentials the kernel gives
// (fabricated here; TestSocketPeers has real peers).
func TestAccess(t *testing.T) {
	const daemon, group = 990, 990
	users := map[int]struct {
		name string
		gids []int
	}{
		0:    {"root", []int{0}},
		990:  {"observerd", []int{990}},
		1000: {"ops", []int{1000, 27, group}}, // in the group as a supplementary one
		1001: {"svc", []int{1001}},
	}
	a := access{self: daemon, group: group, lookup: func(uid int) (string, []int, error) {
		u, ok := users[uid]
		if !ok {
			return "", nil, errors.New("unknown user")
		}
		return u.name, u.gids, nil
	}}
	tests := []struct {
		name     string
		uid, gid uint32
		user     string
		allowed  bool
	}{
		{"root", 0, 0, "root", true},
		{"the daemon's user", daemon, daemon, "observerd", true},
		{"the group as the primary group", 1001, group, "svc", true},
		{"the group as a supplementary group", 1000, 1000, "ops", true},
		{"another user", 1001, 1001, "svc", false},
		{"an unknown uid in the group", 4242, group, "", true},
		{"an unknown uid", 4242, 4242, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, err := a.allow(tt.uid, tt.gid)
			assert.Equal(t, tt.user, user)
			if tt.allowed {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, fmt.Sprintf("uid %d may not use the admin socket: "+
				"it is for root, the daemon's user and the members of group 990 (admin.socket_group)", tt.uid))
		})
	}
}

func TestLookupUser(t *testing.T) {
	name, gids, err := lookupUser(0)
	require.NoError(t, err)
	assert.Equal(t, "root", name)
	assert.Contains(t, gids, 0)
	_, _, err = lookupUser(1 << 30)
	assert.Error(t, err, "no such user")
}
