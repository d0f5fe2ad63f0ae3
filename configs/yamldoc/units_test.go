package yamldoc

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    ByteSize
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "4096", want: 4096},
		{in: "512KiB", want: 512 << 10},
		{in: "32MiB", want: 32 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "2TiB", want: 2 << 40},
		{in: "100MB", want: 100_000_000},
		{in: "1kB", want: 1000},
		{in: "1KB", want: 1000},
		{in: "1gb", want: 1_000_000_000},
		{in: "64 KiB", want: 64 << 10},
		{in: "1.5GiB", want: 3 << 29},
		{in: "10B", want: 10},
		{in: "1.5B", wantErr: `invalid byte size: not a whole number of bytes`},
		{in: "-1MiB", wantErr: `invalid byte size: use a non-negative number and a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), like 64KiB or 1GiB`},
		{in: "MiB", wantErr: `invalid byte size: use a non-negative number and a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), like 64KiB or 1GiB`},
		{in: "1XB", wantErr: `invalid byte size: unknown unit; use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB`},
		{in: "99999999TiB", wantErr: `invalid byte size: too large`},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if tt.wantErr != "" {
			assert.EqualError(t, err, tt.wantErr, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got, tt.in)
		back, err := ParseByteSize(got.String())
		require.NoError(t, err)
		assert.Equal(t, got, back, "String reads back: %s", got)
	}
}

func TestByteSizeString(t *testing.T) {
	for size, want := range map[ByteSize]string{
		0: "0B", 1: "1B", 1000: "1kB", 1024: "1KiB", 1536: "1536B", GiB: "1GiB", 3 * MiB: "3MiB", 100_000_000: "100MB", 1023: "1023B",
	} {
		assert.Equal(t, want, size.String())
	}
}

func TestDurationParse(t *testing.T) {
	d, err := ParseDuration("1m30s")
	require.NoError(t, err)
	assert.Equal(t, Duration(90*time.Second), d)
	assert.Equal(t, "1m30s", d.String())
	_, err = ParseDuration("5")
	assert.EqualError(t, err, `invalid duration: use a number and a unit (ns, us, ms, s, m, h), like 250ms, 5s or 1m30s`)
	zero, err := ParseDuration("0")
	require.NoError(t, err)
	assert.Zero(t, zero)
}

// Both types round-trip through YAML and JSON as human-readable strings.
func TestUnitsMarshal(t *testing.T) {
	type pair struct {
		D Duration `yaml:"d" json:"d"`
		S ByteSize `yaml:"s" json:"s"`
	}
	in := pair{Duration(250 * time.Millisecond), 32 * MiB}

	y, err := yaml.Marshal(in)
	require.NoError(t, err)
	assert.Equal(t, "d: 250ms\ns: 32MiB\n", string(y))
	var fromYAML pair
	require.NoError(t, yaml.Unmarshal(y, &fromYAML))
	assert.Equal(t, in, fromYAML)

	j, err := json.Marshal(in)
	require.NoError(t, err)
	assert.JSONEq(t, `{"d": "250ms", "s": "32MiB"}`, string(j))
	var fromJSON pair
	require.NoError(t, json.Unmarshal(j, &fromJSON))
	assert.Equal(t, in, fromJSON)
}
