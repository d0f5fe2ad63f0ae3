package yamldoc

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong in a document. Validation reports all of them
// at once, joined with errors.Join, so that an operator fixes a file in one
// pass instead of one error per restart.
type Problem struct {
	File    string
	Line    int // 1-based; 0 when the problem concerns the whole file
	Column  int // 1-based; 0 when unknown
	Path    string
	Message string
}

// Error renders "file:line:col: path: message", leaving out the parts that
// are empty or zero, so the output works with editors' jump-to-error.
func (p *Problem) Error() string {
	var loc []string
	if p.File != "" {
		loc = append(loc, p.File)
	}
	if p.Line > 0 {
		loc = append(loc, strconv.Itoa(p.Line))
		if p.Column > 0 {
			loc = append(loc, strconv.Itoa(p.Column))
		}
	}
	var b strings.Builder
	if len(loc) > 0 {
		b.WriteString(strings.Join(loc, ":"))
		b.WriteString(": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// ProblemsOf flattens an error returned by this package or package policy
// into its problems, in order. Errors that are not a *Problem become a
// Problem carrying only their message, so callers can print one uniform list.
func ProblemsOf(err error) []*Problem {
	if err == nil {
		return nil
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*Problem
		for _, e := range joined.Unwrap() {
			out = append(out, ProblemsOf(e)...)
		}
		return out
	}
	if p, ok := errors.AsType[*Problem](err); ok {
		return []*Problem{p}
	}
	return []*Problem{{Message: err.Error()}}
}

// Join sorts problems by file and position and joins them into one error;
// nil when there are none. Sorting makes the output read top to bottom like
// the file, whatever order the checks ran in.
func Join(problems []*Problem) error {
	if len(problems) == 0 {
		return nil
	}
	sorted := slices.Clone(problems)
	slices.SortStableFunc(sorted, func(a, b *Problem) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	errs := make([]error, len(sorted))
	for i, p := range sorted {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// Lines renders the problems of err one per line, file:line first, as an
// operator reads them (and as --check-config prints them).
func Lines(err error) []string {
	var out []string
	for _, p := range ProblemsOf(err) {
		out = append(out, p.Error())
	}
	return out
}
