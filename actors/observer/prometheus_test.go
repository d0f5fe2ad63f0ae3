package observer_test

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

// page is a metrics page with every family type the text format has.
const page = `# HELP app_requests_total Requests answered.
# TYPE app_requests_total counter
app_requests_total{path="/a",code="200"} 10
app_requests_total{path="/b",code="500"} 2
# TYPE app_temperature gauge
app_temperature 21.5
app_version{version="1.2"} 1
# TYPE app_latency_seconds histogram
app_latency_seconds_bucket{le="0.1"} 3
app_latency_seconds_bucket{le="1"} 5
app_latency_seconds_bucket{le="+Inf"} 6
app_latency_seconds_sum 2.5
app_latency_seconds_count 6
# TYPE app_rpc_seconds summary
app_rpc_seconds{quantile="0.5"} 0.2
app_rpc_seconds{quantile="0.99"} 0.9
app_rpc_seconds_sum 12
app_rpc_seconds_count 40
`

// pageSamples is page as typed samples, in the order the observer gives
// them (by family name, then as on the page).
func pageSamples() []*messages.Sample {
	return []*messages.Sample{
		{
			Name: "app_latency_seconds", Type: messages.MetricType_METRIC_TYPE_HISTOGRAM, Count: 6, Sum: 2.5,
			Buckets: []*messages.Bucket{{UpperBound: 0.1, CumulativeCount: 3}, {UpperBound: 1, CumulativeCount: 5}, {UpperBound: math.Inf(1), CumulativeCount: 6}},
		},
		{Name: "app_requests_total", Labels: map[string]string{"path": "/a", "code": "200"}, Type: messages.MetricType_METRIC_TYPE_COUNTER, Value: 10},
		{Name: "app_requests_total", Labels: map[string]string{"path": "/b", "code": "500"}, Type: messages.MetricType_METRIC_TYPE_COUNTER, Value: 2},
		{
			Name: "app_rpc_seconds", Type: messages.MetricType_METRIC_TYPE_SUMMARY, Count: 40, Sum: 12,
			Quantiles: []*messages.Quantile{{Quantile: 0.5, Value: 0.2}, {Quantile: 0.99, Value: 0.9}},
		},
		{Name: "app_temperature", Type: messages.MetricType_METRIC_TYPE_GAUGE, Value: 21.5},
		{Name: "app_version", Labels: map[string]string{"version": "1.2"}, Type: messages.MetricType_METRIC_TYPE_UNTYPED, Value: 1},
	}
}

// assertSamples compares samples as protobuf messages, showing both sides
// as JSON when they differ.
func assertSamples(t *testing.T, want, got []*messages.Sample) {
	t.Helper()
	equal := len(want) == len(got)
	for i := 0; equal && i < len(want); i++ {
		equal = proto.Equal(want[i], got[i])
	}
	if !equal {
		format := func(s []*messages.Sample) string {
			var b strings.Builder
			for _, x := range s {
				b.WriteString(protojson.Format(x) + "\n")
			}
			return b.String()
		}
		assert.Fail(t, "samples differ", "want:\n%s\ngot:\n%s", format(want), format(got))
	}
}

func metricsServer(t *testing.T, body string) *server {
	t.Helper()
	return newServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) })
}

func TestPrometheusScrape(t *testing.T) {
	f := setup(t)
	var accept atomic.Value
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		accept.Store(r.Header.Get("Accept"))
		_, _ = io.WriteString(w, page)
	})
	p := parse(t, srv.URL, "", "    - {name: metrics, kind: prometheus, interval: 1s, prometheus: {}}\n")
	f.start(t, p, "metrics")

	ev := f.waitEvents(t, messages.TypeObservationPrometheus, 1)[0]
	obs := ev.GetPrometheus()
	require.NotNil(t, obs)
	assert.Equal(t, messages.Result_RESULT_OK, obs.Result, obs.Error)
	assert.Empty(t, obs.Error)
	assert.Equal(t, srv.URL+"/metrics", obs.Url, "the default path")
	assert.Positive(t, obs.Latency.AsDuration())
	assert.Less(t, obs.Latency.AsDuration(), time.Second)
	assert.Zero(t, obs.SamplesDropped)
	assertSamples(t, pageSamples(), obs.Samples)
	assert.Equal(t, 1, srv.requests("/metrics"))
	assert.Contains(t, accept.Load(), "text/plain", "the text format is asked for")

	assert.Equal(t, messages.TypeObservationPrometheus, ev.Type)
	assert.Equal(t, "web-target", ev.Subject)
	assert.Equal(t, correlation, ev.CorrelationId)
	assert.Equal(t, "web", ev.GetPolicy().GetName())
}

// series names the samples as name{labels}, labels in name order.
func series(samples []*messages.Sample) []string {
	out := make([]string, len(samples))
	for i, s := range samples {
		var labels []string
		for k, v := range s.Labels {
			labels = append(labels, k+"="+v)
		}
		slices.Sort(labels)
		out[i] = s.Name + "{" + strings.Join(labels, ",") + "}"
	}
	return out
}

func TestPrometheusFilters(t *testing.T) {
	tests := []struct {
		name    string
		section string
		want    []string
		dropped int64
	}{
		{
			name:    "include is anchored",
			section: `{include: ["app_r.*", "app_temp"]}`,
			want:    []string{"app_requests_total{code=200,path=/a}", "app_requests_total{code=500,path=/b}", "app_rpc_seconds{}"},
		},
		{
			name:    "exclude wins over include",
			section: `{include: ["app_.*"], exclude: [".*_seconds", "app_version"]}`,
			want:    []string{"app_requests_total{code=200,path=/a}", "app_requests_total{code=500,path=/b}", "app_temperature{}"},
		},
		{
			name:    "histograms and summaries go by their family name",
			section: `{include: ["app_latency_seconds_bucket", "app_rpc_seconds"]}`,
			want:    []string{"app_rpc_seconds{}"},
		},
		{
			name:    "match_labels keeps series with every label value",
			section: `{match_labels: {code: "500"}}`,
			want:    []string{"app_requests_total{code=500,path=/b}"},
		},
		{
			name:    "an empty match_labels value selects series without the label",
			section: `{include: ["app_requests_total", "app_temperature"], match_labels: {code: ""}}`,
			want:    []string{"app_temperature{}"},
		},
		{
			name:    "sample_limit keeps the first in name order and counts the rest",
			section: `{sample_limit: 2}`,
			want:    []string{"app_latency_seconds{}", "app_requests_total{code=200,path=/a}"},
			dropped: 4,
		},
		{
			name:    "filtered series do not count against the limit",
			section: `{include: ["app_temperature", "app_version"], sample_limit: 2}`,
			want:    []string{"app_temperature{}", "app_version{version=1.2}"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			srv := metricsServer(t, page)
			p := parse(t, srv.URL, "", fmt.Sprintf("    - {name: metrics, kind: prometheus, interval: 1s, prometheus: %s}\n", tc.section))
			f.start(t, p, "metrics")
			obs := f.waitEvents(t, messages.TypeObservationPrometheus, 1)[0].GetPrometheus()
			require.Equal(t, messages.Result_RESULT_OK, obs.Result, obs.Error)
			assert.Equal(t, tc.want, series(obs.Samples))
			assert.Equal(t, tc.dropped, obs.SamplesDropped)
		})
	}
}

func TestPrometheusResults(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc // nil: nothing listens
		timeout string           // default 200ms
		result  messages.Result
		err     string
	}{
		{
			name:    "healthy",
			handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, page) },
			result:  messages.Result_RESULT_OK,
		},
		{
			name:    "failing with 503",
			handler: func(w http.ResponseWriter, _ *http.Request) { http.Error(w, page, http.StatusServiceUnavailable) },
			result:  messages.Result_RESULT_FAILED,
			err:     "status 503, expected 200",
		},
		{
			name:    "a page that does not parse",
			handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "metric{unclosed 1\n") },
			result:  messages.Result_RESULT_FAILED,
			err:     "parse metrics: ",
		},
		{
			name:    "a redirect is reported, not followed",
			handler: func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/elsewhere", http.StatusFound) },
			result:  messages.Result_RESULT_FAILED,
			err:     "status 302",
		},
		{
			name: "a page over 16MiB",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, strings.Repeat("# padding\n", 16<<20/10+1))
			},
			timeout: "5s", // time to send 16MiB under the race detector
			result:  messages.Result_RESULT_FAILED,
			err:     "read metrics: larger than 16777216 bytes",
		},
		{
			name:    "slow past the timeout",
			handler: func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			result:  messages.Result_RESULT_TIMEOUT,
			err:     "context deadline exceeded",
		},
		{
			name:   "stopped",
			result: messages.Result_RESULT_ERROR,
			err:    "connection refused",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			url := "http://" + closedAddr(t)
			if tc.handler != nil {
				url = newServer(t, tc.handler).URL
			}
			timeout := cmp.Or(tc.timeout, "200ms")
			p := parse(t, url, "", fmt.Sprintf("    - {name: metrics, kind: prometheus, interval: 10s, timeout: %s, prometheus: {}}\n", timeout))
			f.start(t, p, "metrics")
			obs := f.waitEvents(t, messages.TypeObservationPrometheus, 1)[0].GetPrometheus()
			assert.Equal(t, tc.result, obs.Result, obs.Error)
			assert.Equal(t, url+"/metrics", obs.Url)
			if tc.err == "" {
				assert.Empty(t, obs.Error)
				assertSamples(t, pageSamples(), obs.Samples)
			} else {
				assert.Contains(t, obs.Error, tc.err)
				assert.Empty(t, obs.Samples)
			}
			assert.Less(t, obs.Latency.AsDuration(), time.Duration(p.Spec.Observers[0].Timeout)+time.Second, "the observation outlived its timeout")
			if tc.result == messages.Result_RESULT_TIMEOUT {
				assert.GreaterOrEqual(t, obs.Latency.AsDuration(), 100*time.Millisecond)
			}
		})
	}
}
