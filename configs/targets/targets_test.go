package targets

import (
	"net"
	"testing"

	"github.com/polar/observerd/configs/yamldoc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAllowList(t *testing.T) {
	a, err := Parse([]string{"127.0.0.0/8", "::1/128", "10.1.2.3", "2001:db8::/32", "DB.Internal."})
	require.NoError(t, err)
	tests := []struct {
		host string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.255.0.9", true},
		{"::1", true},
		{"[::1]", true},
		{"::ffff:127.0.0.1", true}, // IPv4-mapped
		{"10.1.2.3", true},
		{"10.1.2.4", false},
		{"2001:db8::5", true},
		{"2001:db9::5", false},
		{"db.internal", true},
		{"DB.INTERNAL", true},
		{"db.internal.", true},
		{"evil.db.internal", false},
		{"localhost", true},
		{"LocalHost", true},
		{"example.com", false},
		{"192.168.0.1", false},
		{"", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, a.AllowsHost(tt.host), tt.host)
	}
	assert.True(t, a.AllowsIP(net.ParseIP("127.0.0.2")))
	assert.True(t, a.AllowsIP(net.ParseIP("::1")))
	assert.True(t, a.AllowsIP(net.IPv4(10, 1, 2, 3))) // 16-byte form of an IPv4 address
	assert.False(t, a.AllowsIP(net.ParseIP("8.8.8.8")))
	assert.False(t, a.AllowsIP(nil))
	assert.Equal(t, "[127.0.0.0/8 ::1/128 10.1.2.3 2001:db8::/32 DB.Internal.]", a.String())
}

// TestAllowListListsName: only names written in allowed_targets are
// trusted to resolve anywhere; localhost and addresses are checked at
// dial time.
func TestAllowListListsName(t *testing.T) {
	a, err := Parse([]string{"::1/128", "10.1.2.3", "DB.Internal."})
	require.NoError(t, err)
	for host, want := range map[string]bool{
		"db.internal":      true,
		"DB.INTERNAL":      true,
		"db.internal.":     true,
		"evil.db.internal": false,
		"localhost":        false, // allowed by ::1/128, but not listed
		"10.1.2.3":         false, // an address, not a name
		"::1":              false,
		"":                 false,
	} {
		assert.Equal(t, want, a.ListsName(host), host)
	}
	var nilList *AllowList
	assert.False(t, nilList.ListsName("db.internal"))
}

func TestAllowListLocalhost(t *testing.T) {
	v6only, err := Parse([]string{"::1/128"})
	require.NoError(t, err)
	assert.True(t, v6only.AllowsHost("localhost"))
	none, err := Parse(nil)
	require.NoError(t, err)
	assert.False(t, none.AllowsHost("localhost"))
	assert.False(t, none.AllowsHost("127.0.0.1"))
	assert.Equal(t, "[]", none.String())
	var nilList *AllowList
	assert.False(t, nilList.AllowsHost("127.0.0.1"))
	assert.False(t, nilList.AllowsIP(net.ParseIP("127.0.0.1")))
}

func TestParseAllowListErrors(t *testing.T) {
	a, err := Parse([]string{"10.0.0.0/8", "300.1.1.1/8", "-bad-.example", "ok.example"})
	assert.Equal(t, []string{
		`allowed_targets[1]: invalid CIDR`,
		`allowed_targets[2]: neither a CIDR, an IP address nor a host name: invalid host name label of 5 bytes`,
	}, yamldoc.Lines(err))
	// The valid entries still form a list.
	assert.Equal(t, "[10.0.0.0/8 ok.example]", a.String())
	assert.True(t, a.AllowsHost("ok.example"))
}
