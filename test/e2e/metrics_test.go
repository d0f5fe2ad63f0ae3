//go:build integration

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
)

// scrape reads the daemon's /metrics the way Prometheus would.
func (d *daemon) scrape() (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get("http://" + d.admin + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	return families, nil
}

// counterOf is the counter's value in the series with label (name, value),
// or in its only series when no label is given.
func counterOf(families map[string]*dto.MetricFamily, name string, label ...string) float64 {
	for _, m := range families[name].GetMetric() {
		if len(label) == 0 {
			return m.GetCounter().GetValue()
		}
		for _, l := range m.GetLabel() {
			if l.GetName() == label[0] && l.GetValue() == label[1] {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func gaugeOf(families map[string]*dto.MetricFamily, name string) float64 {
	for _, m := range families[name].GetMetric() {
		return m.GetGauge().GetValue()
	}
	return -1
}

// TestMetricsEndToEnd runs observerd against bin/observable and scrapes
// /metrics: every broker metric is there with its type, next to the Go
// runtime's, the process's and the state-manager's, and the event counters
// move between two scrapes while observations flow.
func TestMetricsEndToEnd(t *testing.T) {
	target := startObservable(t)
	d := newDaemon(t, target)
	c := d.consume(t)
	d.start(t)
	c.waitFor(t, messages.TypeObservationHTTP)

	// RabbitMQ delivers to the consumer and acks to the daemon
	// independently: the ack that the histogram counts may come after the
	// delivery.
	var first map[string]*dto.MetricFamily
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var err error
		first, err = d.scrape()
		require.NoError(c, err)
		require.Contains(c, first, "observerd_confirm_latency_seconds")
		assert.Positive(c, first["observerd_confirm_latency_seconds"].GetMetric()[0].GetHistogram().GetSampleCount())
	}, wait, 50*time.Millisecond, "an ack counted in observerd_confirm_latency_seconds")
	for name, typ := range map[string]dto.MetricType{
		"observerd_events_accepted_total":           dto.MetricType_COUNTER,
		"observerd_events_published_total":          dto.MetricType_COUNTER,
		"observerd_events_confirmed_total":          dto.MetricType_COUNTER,
		"observerd_events_nacked_total":             dto.MetricType_COUNTER,
		"observerd_events_returned_total":           dto.MetricType_COUNTER,
		"observerd_events_dropped_total":            dto.MetricType_COUNTER,
		"observerd_events_dropped_unaccepted_total": dto.MetricType_COUNTER,
		"observerd_events_damaged_total":            dto.MetricType_COUNTER,
		"observerd_outbox_events":                   dto.MetricType_GAUGE,
		"observerd_outbox_bytes":                    dto.MetricType_GAUGE,
		"observerd_outbox_oldest_age_seconds":       dto.MetricType_GAUGE,
		"observerd_confirm_latency_seconds":         dto.MetricType_HISTOGRAM,
		"observerd_broker_connected":                dto.MetricType_GAUGE,
		"observerd_broker_blocked":                  dto.MetricType_GAUGE,
		"observerd_broker_reconnects_total":         dto.MetricType_COUNTER,
		// The state-manager's.
		"observerd_observations_total": dto.MetricType_COUNTER,
		// The Go runtime's and the process's.
		"go_goroutines":                 dto.MetricType_GAUGE,
		"go_memstats_heap_alloc_bytes":  dto.MetricType_GAUGE,
		"go_gc_duration_seconds":        dto.MetricType_SUMMARY,
		"process_cpu_seconds_total":     dto.MetricType_COUNTER,
		"process_resident_memory_bytes": dto.MetricType_GAUGE,
		"process_open_fds":              dto.MetricType_GAUGE,
	} {
		if assert.Contains(t, first, name) {
			assert.Equal(t, typ, first[name].GetType(), name)
		}
	}
	assert.Equal(t, 1.0, gaugeOf(first, "observerd_broker_connected"))
	assert.Zero(t, gaugeOf(first, "observerd_broker_blocked"))
	assert.Positive(t, counterOf(first, "observerd_events_accepted_total", "type", messages.TypeDaemonStarted))

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		second, err := d.scrape()
		require.NoError(c, err)
		for _, name := range []string{"observerd_events_published_total", "observerd_events_confirmed_total"} {
			assert.Greater(c, counterOf(second, name), counterOf(first, name), name)
		}
		assert.Greater(c, counterOf(second, "observerd_events_accepted_total", "type", messages.TypeObservationHTTP),
			counterOf(first, "observerd_events_accepted_total", "type", messages.TypeObservationHTTP))
	}, wait, tick, "the event counters move while observations flow")
}

// TestMetricsPassPromtool: a live /metrics scrape passes `promtool check
// metrics`, Prometheus's own lint of names, types, units and help texts.
func TestMetricsPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	require.NoError(t, err, "promtool is missing: make deps installs Debian's prometheus package")
	d := newDaemon(t, startObservable(t))
	c := d.consume(t)
	d.start(t)
	c.waitFor(t, messages.TypeObservationHTTP)
	resp, err := http.Get("http://" + d.admin + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "promtool check metrics:\n%s", out)
	t.Logf("promtool check metrics: %d bytes scraped, %q", len(body), out)
}
