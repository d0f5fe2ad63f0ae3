// Package docblock finds the code blocks of Markdown pages, so that a
// test can hold a page to the files it shows (a sample policy, a
// consumer): a page's code is then the file, as it is.
package docblock

import "bytes"

// After is the first fenced code block of lang (```lang) that follows the
// line heading in doc, without its fences; ok is false when doc has no
// such line, or no such block after it.
func After(doc []byte, heading, lang string) (block string, ok bool) {
	_, after, ok := bytes.Cut(doc, []byte(heading+"\n"))
	if !ok {
		return "", false
	}
	_, code, ok := bytes.Cut(after, []byte("```"+lang+"\n"))
	if !ok {
		return "", false
	}
	code, _, ok = bytes.Cut(code, []byte("```\n"))
	return string(code), ok
}
