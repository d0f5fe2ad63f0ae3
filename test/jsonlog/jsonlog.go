// Package jsonlog reads the daemon's JSON log lines as their consumers
// (jq, Loki, Elasticsearch) do: each line one JSON object whose keys
// appear once. encoding/json keeps the last of a repeated key without a
// word, and so would a test that decodes lines with it; Lines says which
// key repeats, and where.
package jsonlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Lines decodes every non-empty line of b, each a JSON object; an error
// names the first line that is not one, or that repeats a key (at any
// depth).
func Lines(b []byte) ([]map[string]any, error) {
	var out []map[string]any
	for i, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if err := uniqueKeys(json.NewDecoder(bytes.NewReader(line))); err != nil {
			return nil, fmt.Errorf("log line %d: %w: %.200s", i+1, err, line)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("log line %d: %w: %.200s", i+1, err, line)
		}
		out = append(out, m)
	}
	return out, nil
}

// uniqueKeys reads one JSON value from dec and fails on an object that
// repeats a key.
func uniqueKeys(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("read json: %w", err)
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return fmt.Errorf("read json: %w", err)
			}
			key := k.(string) // an object's tokens alternate key, value
			if seen[key] {
				return fmt.Errorf("key %q appears twice", key)
			}
			seen[key] = true
			if err := uniqueKeys(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
	case json.Delim('['):
		for dec.More() {
			if err := uniqueKeys(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read json: %w", err)
	}
	return nil
}
