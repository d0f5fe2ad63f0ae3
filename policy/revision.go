package policy

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/polar/observerd/configs/yamldoc"
)

// RevisionLength is how many hex digits of the SHA-256 a revision keeps:
// 48 bits tell apart the versions of one policy with room to spare, and
// stay readable in events and logs.
const RevisionLength = 12

// revision hashes the canonical form of the policy: the parsed values with
// defaults applied, observers sorted by name, encoded by encoding/json
// (which sorts map keys). Whitespace, comments, key order, observer order
// and spelling out a default do not change it; any change of meaning does.
// The file name is not part of it, nor is the content of a wasm module
// (pin that with sha256).
func (p *Policy) revision() (string, error) {
	observers := make([]json.RawMessage, len(p.Spec.Observers))
	sorted := slices.SortedFunc(slices.Values(p.Spec.Observers), func(a, b Observer) int { return cmp.Compare(a.Name, b.Name) })
	for i, o := range sorted {
		c, err := canonical(o)
		if err != nil {
			return "", fmt.Errorf("compute revision: %w", err)
		}
		observers[i] = c
	}
	type spec struct {
		Target    Target
		Limits    Limits
		Observers []json.RawMessage
	}
	data, err := json.Marshal(struct {
		APIVersion, Kind string
		Metadata         Metadata
		Spec             spec
	}{p.APIVersion, p.Kind, p.Metadata, spec{p.Spec.Target, p.Spec.Limits, observers}})
	if err != nil {
		return "", fmt.Errorf("compute revision: %w", err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:RevisionLength], nil
}

// sectionKeys are the kinds whose sections were fields of Observer when
// the canonical form was fixed, under those fields' names, in their
// order. Revisions are published in events and compared across versions
// of the daemon, so the form of an observer stays what encoding/json made
// of that struct: its fields, then one key per kind of this list, null
// but for the observer's own kind, then Line, zero. A kind added later
// adds its section under its name, after these, to its own observers
// only: adding a kind changes no revision of an existing policy.
var sectionKeys = []struct{ kind, key string }{
	{"http", "HTTP"}, {"prometheus", "Prometheus"}, {"tcp", "TCP"}, {"process", "Process"}, {"wasm", "WASM"},
}

// canonical is the canonical form of an observer (see sectionKeys).
func canonical(o Observer) (json.RawMessage, error) {
	head, err := json.Marshal(struct {
		Name, Kind        string
		Interval, Timeout yamldoc.Duration
		Thresholds        Thresholds
	}{o.Name, o.Kind, o.Interval, o.Timeout, o.Thresholds})
	if err != nil {
		return nil, err
	}
	section, err := json.Marshal(o.Section)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Write(head[:len(head)-1]) // open, to append to
	own := false
	for _, s := range sectionKeys {
		fmt.Fprintf(&b, ",%q:", s.key)
		if s.kind == o.Kind {
			b.Write(section)
			own = true
		} else {
			b.WriteString("null")
		}
	}
	if !own {
		key, err := json.Marshal(o.Kind)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, ",%s:%s", key, section)
	}
	b.WriteString(`,"Line":0}`)
	return b.Bytes(), nil
}

// Change is what differs between two versions of a policy, by observer
// name. Each list is sorted.
type Change struct {
	Added, Updated, Removed []string
	// TargetOrLimitsChanged means every observer present in both versions
	// is in Updated, since they all share the target and the limits.
	TargetOrLimitsChanged bool
}

// IsZero reports that nothing running has to change.
func (c Change) IsZero() bool {
	return len(c.Added) == 0 && len(c.Updated) == 0 && len(c.Removed) == 0 && !c.TargetOrLimitsChanged
}

// Diff compares two versions of a policy; either may be nil (a policy
// appearing or going away). An observer is Updated when its canonical form
// differs, or when the target or the limits changed. Reordering observers
// changes nothing, and renaming one is a removal plus an addition. When the
// policy itself is renamed, its observers are new ones (their event
// sources change): all of them are Removed and Added.
func Diff(old, new *Policy) Change {
	var c Change
	oldObs, newObs := observersOf(old), observersOf(new)
	renamed := old != nil && new != nil && old.Metadata.Name != new.Metadata.Name
	if old != nil && new != nil && !renamed {
		c.TargetOrLimitsChanged = old.Spec.Target != new.Spec.Target || old.Spec.Limits != new.Spec.Limits
	}
	for name, o := range newObs {
		prev, ok := oldObs[name]
		switch {
		case !ok || renamed:
			c.Added = append(c.Added, name)
		case c.TargetOrLimitsChanged || !sameObserver(prev, o):
			c.Updated = append(c.Updated, name)
		}
	}
	for name := range oldObs {
		if _, ok := newObs[name]; !ok || renamed {
			c.Removed = append(c.Removed, name)
		}
	}
	slices.Sort(c.Added)
	slices.Sort(c.Updated)
	slices.Sort(c.Removed)
	return c
}

func observersOf(p *Policy) map[string]Observer {
	m := map[string]Observer{}
	if p != nil {
		for _, o := range p.Spec.Observers {
			m[o.Name] = o
		}
	}
	return m
}

// sameObserver compares canonical forms; one that cannot be encoded counts
// as changed, which restarts it rather than keeping something stale.
func sameObserver(a, b Observer) bool {
	ja, errA := canonical(a)
	jb, errB := canonical(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}
