// Package targets is allowed_targets: the hosts that policies may
// observe, as CIDR prefixes, addresses and exact host names. It is what
// stops a policy file from turning the daemon into a scanner of the
// network it sits in; observers check it again at every connect.
package targets

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/polar/observerd/configs/yamldoc"
)

// AllowList is the set of hosts that policies may observe.
type AllowList struct {
	entries  []string
	prefixes []netip.Prefix
	names    map[string]bool
}

var hostLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// DefaultEntries are allowed_targets when the config sets none: this
// host's loopback, where the service the daemon sits beside answers.
func DefaultEntries() []string { return []string{"127.0.0.0/8", "::1/128"} }

// Default is the allow list of DefaultEntries.
func Default() *AllowList {
	a, err := Parse(DefaultEntries())
	if err != nil {
		panic(err) // constant entries
	}
	return a
}

// Parse parses allowed_targets entries: a CIDR ("10.0.0.0/8"), an
// address ("10.1.2.3", "::1") or a host name ("db.internal"). It returns
// the list of the valid entries and, for each invalid one, a *Problem whose
// path is allowed_targets[i].
func Parse(entries []string) (*AllowList, error) {
	a := &AllowList{names: map[string]bool{}}
	var problems []*yamldoc.Problem
	for i, raw := range entries {
		prefix, name, err := parseAllowEntry(raw)
		if err != nil {
			problems = append(problems, &yamldoc.Problem{Path: fmt.Sprintf("allowed_targets[%d]", i), Message: err.Error()})
			continue
		}
		a.entries = append(a.entries, raw)
		if name != "" {
			a.names[name] = true
		} else {
			a.prefixes = append(a.prefixes, prefix)
		}
	}
	return a, yamldoc.Join(problems)
}

// parseAllowEntry returns either a prefix or a normalised host name.
func parseAllowEntry(raw string) (netip.Prefix, string, error) {
	s := strings.TrimSpace(raw)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, "", fmt.Errorf("invalid CIDR")
		}
		if p != p.Masked() {
			return netip.Prefix{}, "", fmt.Errorf("the CIDR has host bits set; did you mean %s?", p.Masked())
		}
		return p, "", nil
	}
	if addr, err := netip.ParseAddr(s); err == nil {
		if addr.Zone() != "" {
			return netip.Prefix{}, "", fmt.Errorf("the address has a zone; zones are not supported")
		}
		return netip.PrefixFrom(addr, addr.BitLen()), "", nil
	}
	name, err := HostName(s)
	if err != nil {
		return netip.Prefix{}, "", fmt.Errorf("neither a CIDR, an IP address nor a host name: %w", err)
	}
	return netip.Prefix{}, name, nil
}

// HostName validates a DNS host name and returns it lower-cased without a
// trailing dot.
func HostName(s string) (string, error) {
	name := strings.TrimSuffix(strings.ToLower(s), ".")
	if name == "" {
		return "", errors.New("empty host name")
	}
	if len(name) > 253 {
		return "", errors.New("host name longer than 253 characters")
	}
	for label := range strings.SplitSeq(name, ".") {
		if !hostLabel.MatchString(label) {
			return "", fmt.Errorf("invalid host name label of %s", yamldoc.Bytes(len(label)))
		}
	}
	return name, nil
}

// AllowsHost reports whether a policy may target host: an IP literal
// (brackets allowed) inside one of the prefixes, or a host name listed
// exactly (case-insensitive). "localhost" is allowed when 127.0.0.1 or ::1
// is. A listed name trusts whatever it resolves to (ListsName); for any
// other host, the dialer must check every address it connects to with
// AllowsIP.
func (a *AllowList) AllowsHost(host string) bool {
	if a == nil {
		return false
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if addr, err := netip.ParseAddr(host); err == nil {
		return a.allowsAddr(addr)
	}
	if a.ListsName(host) {
		return true
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	return name == "localhost" && (a.allowsAddr(netip.AddrFrom4([4]byte{127, 0, 0, 1})) || a.allowsAddr(netip.IPv6Loopback()))
}

// ListsName reports whether host is a name listed exactly
// (case-insensitive, a trailing dot ignored). Listing a name trusts its
// resolution, so the dialer does not check the addresses it resolves to;
// "localhost", allowed through a loopback prefix, is not a listed name,
// and neither is an IP literal.
func (a *AllowList) ListsName(host string) bool {
	if a == nil {
		return false
	}
	return a.names[strings.TrimSuffix(strings.ToLower(host), ".")]
}

// AllowsIP reports whether ip lies inside one of the prefixes. It is the
// dial-time check of resolved addresses, so that a name that resolves (or
// is rebound) off the list is still refused.
func (a *AllowList) AllowsIP(ip net.IP) bool {
	addr, ok := netip.AddrFromSlice(ip)
	return ok && a.allowsAddr(addr)
}

func (a *AllowList) allowsAddr(addr netip.Addr) bool {
	if a == nil {
		return false
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range a.prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// String lists the entries as written, for messages: [127.0.0.0/8 ::1/128].
func (a *AllowList) String() string {
	if a == nil {
		return "[]"
	}
	return "[" + strings.Join(a.entries, " ") + "]"
}
