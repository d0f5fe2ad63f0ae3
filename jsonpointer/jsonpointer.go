// Package jsonpointer finds a value of a decoded JSON document by an RFC
// 6901 pointer. It is the one rule behind both `extract` lists: the http
// observer kind's, and a plugin's HttpRequest.extract, which the host
// answers for it.
package jsonpointer

import (
	"errors"
	"strconv"
	"strings"
)

// Check checks RFC 6901 syntax: empty (the whole document) or
// /-separated tokens where ~ is only ever ~0 or ~1. Its errors never
// quote the pointer.
func Check(p string) error {
	if p != "" && !strings.HasPrefix(p, "/") {
		return errors.New("invalid JSON pointer: it must be empty or begin with /")
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '~' && (i+1 == len(p) || (p[i+1] != '0' && p[i+1] != '1')) {
			return errors.New("invalid JSON pointer: ~ must be followed by 0 or 1 (~0 is ~, ~1 is /)")
		}
	}
	return nil
}

// Find follows pointer in doc, a document decoded into an any (as
// json.Unmarshal does), and reports whether the value is there. The empty
// pointer is the whole document. A token is unescaped "~1" to "/" and
// "~0" to "~", in one pass. An array index is only its canonical decimal
// form (no sign, no leading zero), as the RFC says; "-" (past the end)
// finds nothing.
func Find(doc any, pointer string) (any, bool) {
	if pointer == "" {
		return doc, true
	}
	if pointer[0] != '/' {
		return nil, false
	}
	for _, tok := range strings.Split(pointer[1:], "/") {
		tok = unescape.Replace(tok)
		switch node := doc.(type) {
		case map[string]any:
			v, ok := node[tok]
			if !ok {
				return nil, false
			}
			doc = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(node) || tok != strconv.Itoa(i) {
				return nil, false
			}
			doc = node[i]
		default:
			return nil, false
		}
	}
	return doc, true
}

// unescape scans once, left to right, so that "~01" is "~1", not "/".
var unescape = strings.NewReplacer("~1", "/", "~0", "~")
