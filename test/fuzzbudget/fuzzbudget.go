// Package fuzzbudget holds fuzz targets to a memory budget per input, so
// that a resource bomb (an input that makes a parser allocate without
// bound) fails a fuzz run the way a crash does, instead of passing
// unnoticed or taking the fuzzer down with it.
package fuzzbudget

import (
	"runtime/metrics"
	"testing"
)

// MaxAlloc is the default budget: a hostile input under a parser's size
// cap must cost less than this to reject.
const MaxAlloc = 50 << 20

const allocs = "/gc/heap/allocs:bytes"

// Check runs f and fails t when f allocated more than limit bytes. The
// count is the runtime's cumulative heap allocation, read without
// stopping the world; other goroutines' allocations meanwhile count too,
// which only makes the check stricter.
func Check(t testing.TB, limit uint64, f func()) {
	t.Helper()
	before := read()
	f()
	if used := read() - before; used > limit {
		t.Fatalf("allocated %d bytes for one input; the budget is %d", used, limit)
	}
}

func read() uint64 {
	s := []metrics.Sample{{Name: allocs}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
