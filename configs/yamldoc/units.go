package yamldoc

import (
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written the Go way in YAML: "250ms", "5s",
// "1m30s". A bare number is refused (except 0): go-yaml would read "5" as
// five nanoseconds, which is never what an operator means.
type Duration time.Duration

// ParseDuration parses a duration such as "5s" or "1m30s".
func ParseDuration(s string) (Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration: use a number and a unit (ns, us, ms, s, m, h), like 250ms, 5s or 1m30s")
	}
	return Duration(d), nil
}

// String renders the duration so that ParseDuration reads it back.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML reads a scalar such as 5s.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a duration like 5s, got %s", describe(n))
	}
	return d.UnmarshalText([]byte(n.Value))
}

// MarshalYAML writes the duration as ParseDuration reads it.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalText parses a duration such as 5s; it also serves JSON.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText renders the duration; JSON then shows "5s", not nanoseconds.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// ByteSize is a size in bytes written in YAML with an SI (kB, MB, GB, TB:
// powers of 1000) or IEC (KiB, MiB, GiB, TiB: powers of 1024) unit, such as
// 64KiB, 1GiB or 100MB, or as a plain integer of bytes. Units are read
// case-insensitively; a fraction is allowed when the result is whole bytes
// (1.5GiB).
type ByteSize int64

// Units of ByteSize, largest first within each family.
const (
	KiB ByteSize = 1 << 10
	MiB ByteSize = 1 << 20
	GiB ByteSize = 1 << 30
	TiB ByteSize = 1 << 40
)

var byteUnits = []struct {
	name string
	size ByteSize
}{
	{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3},
	{"B", 1},
}

var byteSizeSyntax = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$`)

// ParseByteSize parses a size such as 32MiB, 100MB or 4096.
func ParseByteSize(s string) (ByteSize, error) {
	bad := func(why string) error {
		return fmt.Errorf("invalid byte size: %s", why)
	}
	m := byteSizeSyntax.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, bad("use a non-negative number and a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), like 64KiB or 1GiB")
	}
	unit := ByteSize(1)
	if m[2] != "" {
		unit = 0
		for _, u := range byteUnits {
			if strings.EqualFold(m[2], u.name) {
				unit = u.size
			}
		}
		if unit == 0 {
			return 0, bad("unknown unit; use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB")
		}
	}
	n, _ := new(big.Rat).SetString(m[1]) // the regexp admits only decimals
	n.Mul(n, new(big.Rat).SetInt64(int64(unit)))
	if !n.IsInt() {
		return 0, bad("not a whole number of bytes")
	}
	if !n.Num().IsInt64() {
		return 0, bad("too large")
	}
	return ByteSize(n.Num().Int64()), nil
}

// String renders the size with the largest unit that divides it exactly,
// so that ParseByteSize reads it back to the same number.
func (s ByteSize) String() string {
	for _, u := range byteUnits {
		if s != 0 && s%u.size == 0 {
			return fmt.Sprintf("%d%s", s/u.size, u.name)
		}
	}
	return "0B"
}

// UnmarshalYAML reads a scalar such as 32MiB or 4096.
func (s *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a byte size like 64KiB, got %s", describe(n))
	}
	return s.UnmarshalText([]byte(n.Value))
}

// MarshalYAML writes the size as ParseByteSize reads it.
func (s ByteSize) MarshalYAML() (any, error) { return s.String(), nil }

// UnmarshalText parses a size such as 32MiB; it also serves JSON.
func (s *ByteSize) UnmarshalText(b []byte) error {
	v, err := ParseByteSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText renders the size; JSON then shows "32MiB".
func (s ByteSize) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
