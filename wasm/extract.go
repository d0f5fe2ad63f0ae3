package wasm

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// What HttpRequest.extract may ask, at most: the host decodes the body
// once and looks each pointer up, so the work is bounded by the body's
// cap and these.
const (
	MaxExtract      = 64      // pointers per request
	MaxPointerBytes = 1 << 10 // bytes of one pointer
)

// checkExtract refuses an HttpRequest.extract over its caps, or with a
// pointer that is not RFC 6901 (neither empty nor starting with "/").
func checkExtract(pointers []string) error {
	if len(pointers) > MaxExtract {
		return fmt.Errorf("%d pointers, the cap is %d", len(pointers), MaxExtract)
	}
	for _, p := range pointers {
		switch {
		case len(p) > MaxPointerBytes:
			return fmt.Errorf("a pointer of %d bytes, the cap is %d", len(p), MaxPointerBytes)
		case p != "" && p[0] != '/':
			return fmt.Errorf("pointer %q does not start with /", clip(p))
		}
	}
	return nil
}

// extractJSON returns the values that the pointers locate in body, a JSON
// document, each as JSON text; nil when there are no pointers or body is
// not JSON. The guest gets what it would have decoded itself, without
// running a JSON decoder in the sandbox, where every loop of it is
// several times slower (see doc.go).
func extractJSON(body []byte, pointers []string) map[string]string {
	if len(pointers) == 0 {
		return nil
	}
	var doc any
	if json.Unmarshal(body, &doc) != nil {
		return nil
	}
	out := make(map[string]string, len(pointers))
	for _, p := range pointers {
		v, ok := locate(doc, p)
		if !ok {
			continue
		}
		// A value decoded from JSON always encodes again.
		b, _ := json.Marshal(v)
		out[p] = string(b)
	}
	return out
}

// locate follows an RFC 6901 pointer in a document decoded into an any.
// An array index is only its canonical decimal form (no sign, no leading
// zero), as the RFC says.
func locate(doc any, pointer string) (any, bool) {
	if pointer == "" {
		return doc, true
	}
	for _, tok := range strings.Split(pointer, "/")[1:] {
		// ~1 before ~0, so that "~01" is "~1", not "/".
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
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
