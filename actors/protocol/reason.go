package protocol

import "strings"

// MaxReason bounds the reason a message carries for a failure, a warning
// or a rejection: its first line says what to fix, and observerctl prints
// it on one line.
const MaxReason = 1 << 10

// Reason is the form a reason takes in a message: the first line of s, at
// most MaxReason bytes, cut on a rune boundary and then marked "…".
func Reason(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	if len(line) > MaxReason {
		line = strings.ToValidUTF8(line[:MaxReason], "") + "…"
	}
	return line
}
