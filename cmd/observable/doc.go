// Command observable is the demo service that observerd observes in the demo
// (make run), the tests and the benchmarks. It is small but real: it serves
// health, Prometheus metrics and a JSON status over HTTP, has a PID, listens
// on a TCP port, and can be switched at run time into every failure mode an
// observer must cope with (failing, slow, flapping, hanging).
//
// Usage:
//
//	observable [flags]
//
// Flags:
//
//	--listen ADDR            address to listen on (default 127.0.0.1:8080);
//	                         port 0 picks a free port. The chosen address is
//	                         always printed to stdout as "listening on ADDR".
//	--pid-file PATH          write the PID there at start, remove it at exit.
//	--ready-file PATH        write the actual listen address there (no trailing
//	                         newline) once listening, remove it at exit, so
//	                         that tests and scripts poll for it instead of
//	                         sleeping. It is written atomically.
//	--mode MODE              initial mode: ok, fail, slow, flap or hang (default ok).
//	--latency DURATION       latency added to every observed endpoint, in every
//	                         mode (default 0; mode slow uses 2s while it is 0).
//	                         A request waiting out its latency returns at once
//	                         when its client goes away, and answers 503 when
//	                         the service stops.
//	--flap-period DURATION   in mode flap, alternate health every period; 0 (the
//	                         default) alternates on every /healthz request.
//	--shutdown-timeout DURATION
//	                         how long a graceful stop waits for in-flight
//	                         requests (default 5s).
//	--version                print the version and exit.
//
// Observed endpoints (the ones modes and latency apply to):
//
//	GET /healthz     200 "ok"; 503 "failing" in mode fail; in mode flap it
//	                 alternates 200 and 503 (first 200) per request or per
//	                 --flap-period.
//	GET /metrics     Prometheus text format from the service's own registry:
//	                 observable_http_requests_total{path,code},
//	                 observable_http_request_duration_seconds{path},
//	                 observable_queue_backlog, observable_hanging_requests,
//	                 observable_mode{mode}, observable_build_info{version},
//	                 plus the Go and process collectors. 503 in mode fail.
//	GET /api/status  JSON {"status","mode","backlog","latency",
//	                 "uptime_seconds","requests","version"}; status is ok,
//	                 failing (with 503), degraded (slow) or flapping.
//
// In mode slow each observed endpoint answers after the latency; in mode
// hang it accepts the request and does not answer until the mode changes
// (then the request is served in the new mode), the client goes away (then
// the handler returns at once), or the service shuts down (then it answers
// 503). The service can also simply be killed to stop answering altogether.
//
// Control API, for tests and demos; never counted, never affected by modes.
// The value may be given in the query or in a form body. Every POST answers
// the resulting control state, as GET /control/state does, or 400 with the
// reason for a bad value:
//
//	GET  /control/state                 JSON {"mode","latency","flap_period",
//	                                    "backlog","hanging"}; latency as set
//	                                    (mode slow uses 2s while it is 0s);
//	                                    hanging: requests held by mode hang
//	                                    now. Readable in every mode.
//	POST /control/mode?value=ok|fail|slow|flap|hang
//	POST /control/latency?value=250ms
//	POST /control/flap?value=1s
//	POST /control/backlog?value=150     sets observable_queue_backlog
//	GET  /control/counts                JSON {"/healthz": N, ...}: requests
//	                                    received per path since start or the
//	                                    last reset, counted on arrival, before
//	                                    any mode or latency, /control/* excluded.
//	GET  /control/connections           JSON {"accepted": N}: TCP connections
//	                                    accepted since start or the last reset
//	                                    (what a tcp observer produces).
//	POST /control/reset                 zeroes the counts and connections.
//
// SIGTERM and SIGINT stop it gracefully: hung requests are released, the
// server drains within --shutdown-timeout, the PID and ready files are
// removed, and it exits 0. It exits 1 on a runtime error and 2 on a usage
// error.
package main
