package wasm

import (
	"encoding/json"
	"fmt"

	"github.com/polar/observerd/jsonpointer"
)

// What HttpRequest.extract may ask, at most: the host decodes the body
// once and looks each pointer up, so the work is bounded by the body's
// cap and these.
const (
	MaxExtract      = 64      // pointers per request
	MaxPointerBytes = 1 << 10 // bytes of one pointer
)

// checkExtract refuses an HttpRequest.extract over its caps, or with a
// pointer that is not RFC 6901.
func checkExtract(pointers []string) error {
	if len(pointers) > MaxExtract {
		return fmt.Errorf("%d pointers, the cap is %d", len(pointers), MaxExtract)
	}
	for i, p := range pointers {
		if len(p) > MaxPointerBytes {
			return fmt.Errorf("a pointer of %d bytes, the cap is %d", len(p), MaxPointerBytes)
		}
		if err := jsonpointer.Check(p); err != nil {
			return fmt.Errorf("extract[%d]: %w", i, err)
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
		v, ok := jsonpointer.Find(doc, p)
		if !ok {
			continue
		}
		// A value decoded from JSON always encodes again.
		b, _ := json.Marshal(v)
		out[p] = string(b)
	}
	return out
}
