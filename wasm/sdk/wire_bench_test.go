//go:build !wasip1

package sdk

import (
	"testing"
	"time"
)

// BenchmarkWire is the wire code of one call of status-threshold.wasm as
// make bench's row 7 runs it, message by message and all four together
// ("call"). doc.go says what the figures decided.
//
//	go test -run '^$' -bench Wire ./wasm/sdk/
func BenchmarkWire(b *testing.B) {
	req := encodeRequest(&Request{
		Observer:   "plugin",
		Target:     Target{Name: "status", URL: "http://127.0.0.1:8080"},
		ConfigJSON: []byte(`{"threshold":100}`),
		Time:       time.Date(2026, 12, 4, 22, 6, 35, 123456789, time.UTC),
	})
	body := `{"status":"ok","mode":"ok","backlog":150,"latency":"0s","uptime_seconds":12.5,` +
		`"requests":{"/healthz":3,"/api/status":42},"version":"dev"}`
	resp := encodeResponse(&Response{
		StatusCode: 200,
		Header: map[string]string{
			"Content-Type":   "application/json",
			"Content-Length": "123",
			"Date":           "Fri, 04 Dec 2026 22:06:35 GMT",
		},
		Body: []byte(body),
	})
	httpReq := HTTPRequest{URL: "/api/status"}
	obs := Observation{
		TypeSuffix: "threshold",
		Severity:   SeverityHigh,
		Payload:    []byte(`{"value":150,"threshold":100,"above":true}`),
		Schema:     "polar.examples.status_threshold.v1",
		Labels:     map[string]string{"pointer": "/backlog"},
		Result:     ResultFailed,
	}
	steps := []struct {
		name string
		run  func() error
	}{
		{"ObserveRequest", func() error { _, err := decodeObserveRequest(req); return err }},
		{"HttpRequest", func() error { appendHTTPRequest(nil, "GET", &httpReq); return nil }},
		{"HttpResponse", func() error { _, err := decodeHTTPResponse(resp); return err }},
		{"PluginObservation", func() error { appendObservation(nil, &obs); return nil }},
	}
	call := func() error {
		for _, s := range steps {
			if err := s.run(); err != nil {
				return err
			}
		}
		return nil
	}
	for _, s := range append(steps, struct {
		name string
		run  func() error
	}{"call", call}) {
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := s.run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
