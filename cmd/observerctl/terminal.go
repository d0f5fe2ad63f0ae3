package main

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
)

// What observerctl prints comes from the daemon, the broker, plugins and
// the services they observe: none of it is trusted to be kind to a
// terminal. An escape sequence in an event's subject, a plugin's payload
// or an observer's last error must show as text, never act on the
// operator's screen.

// maxLine clips a printed line: an event can carry megabytes of text.
const maxLine = 4096

// printable makes one line of text safe to print: control characters and
// other unprintable runes are shown escaped (\x1b, not an escape sequence
// that rewrites the operator's terminal), and the text is clipped to
// maxLine bytes.
func printable(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= maxLine {
			b.WriteString("…")
			break
		}
		if unicode.IsPrint(r) {
			b.WriteRune(r)
			continue
		}
		q := strconv.QuoteRuneToASCII(r)
		b.WriteString(q[1 : len(q)-1])
	}
	return b.String()
}

// printLines writes what render writes to w, each line made printable.
func printLines(w io.Writer, render func(io.Writer)) {
	var buf bytes.Buffer
	render(&buf)
	for line := range strings.Lines(buf.String()) {
		io.WriteString(w, printable(strings.TrimSuffix(line, "\n"))+"\n")
	}
}

// jsonSafe escapes, as JSON \u escapes, the unprintable runes that JSON
// encoders leave raw (DEL, the C1 controls, bidirectional overrides), so
// that a JSON line is valid JSON, the same value, and safe in a terminal.
// It keeps JSON's own white space (the newlines of indented output).
func jsonSafe(js []byte) []byte {
	var b bytes.Buffer
	for _, r := range string(js) {
		if unicode.IsPrint(r) || r == '\n' || r == ' ' {
			b.WriteRune(r)
			continue
		}
		for _, u := range utf16.Encode([]rune{r}) {
			b.WriteString(`\u`)
			b.WriteString(strconv.FormatUint(uint64(u)|0x10000, 16)[1:])
		}
	}
	return b.Bytes()
}
