package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors/observer"
	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
	"github.com/polar/observerd/wasm"
)

// pluginsResult is row 7: the plugin host (package wasm), in this process.
type pluginsResult struct {
	module     string // the example plugin measured
	moduleSize int    // its bytes
	emptySize  int    // the empty guest's bytes
	// built is how long building the empty guest took (not measured
	// further: go build's cache makes it fast after the first run).
	built time.Duration

	// Per call, warm instances, one figure per round (the mean over the
	// round's calls). The observer actor: ObserveNow until its
	// observation reaches the state actor, for the wasm kind running
	// status-threshold.wasm and for the http kind with extract [/backlog].
	actorPlugin, actorBuiltin []time.Duration
	// The host alone: Plugin.Observe of status-threshold.wasm, and a plain
	// net/http GET + JSON decode + pointer lookup of the same endpoint.
	hostPlugin, hostBaseline []time.Duration
	// empty is Plugin.Observe of a guest whose polar_observe returns 0 at
	// once: the host's own per-call cost.
	empty      []time.Duration
	calls      int // per side per round, the two comparisons
	emptyCalls int // per round
	rounds     int

	// Cold start: a fresh Host (newHost) and its Check of the module
	// (compile, validate, instantiate, polar_abi_version), with an empty
	// compilation cache and with a warm one.
	newHost    []time.Duration
	cold, warm []time.Duration

	// A further instance of the compiled module: NewPlugin (reads and
	// hashes the file, finds the compiled module) and its first Observe
	// (instantiate, _initialize, polar_abi_version, one call), per
	// instance; the RSS of the process around keeping them warm.
	newPlugin, firstObserve []time.Duration
	rssBefore, rssAfter     procMem
	rssClosed               procMem // after closing them
}

// Which figures the row reports.
const (
	pluginRounds        = 4
	emptyRounds         = 3
	coldRuns            = 3
	warmInstances       = 10
	defaultPluginCalls  = 2000
	quickPluginCalls    = 400
	emptyCallsPerPlugin = 10 // the empty observe: this many calls per --plugin-calls
	pluginWait          = 5 * time.Second
)

// statusDoc is what the row's target serves on /api/status, shaped like
// bin/observable's.
const statusDoc = `{"status":"ok","mode":"ok","backlog":150,"latency":"0s","uptime_seconds":12.5,` +
	`"requests":{"/healthz":3,"/api/status":42},"version":"dev"}`

// Per call, round means: the reported figure is their median.
func (r *pluginsResult) emptyCall() time.Duration        { return medianDuration(r.empty) }
func (r *pluginsResult) actorPluginCall() time.Duration  { return medianDuration(r.actorPlugin) }
func (r *pluginsResult) actorBuiltinCall() time.Duration { return medianDuration(r.actorBuiltin) }
func (r *pluginsResult) hostPluginCall() time.Duration   { return medianDuration(r.hostPlugin) }
func (r *pluginsResult) hostBaselineCall() time.Duration { return medianDuration(r.hostBaseline) }

// instantiate estimates a fresh instance of a compiled module: the first
// Observe of a new plugin less a warm call.
func (r *pluginsResult) instantiate() time.Duration {
	return max(0, medianDuration(r.firstObserve)-r.hostPluginCall())
}

// perInstance is the RSS growth per warm instance.
func (r *pluginsResult) perInstance() (rss, anon int64) {
	n := int64(len(r.firstObserve))
	if n == 0 {
		return 0, 0
	}
	return (int64(r.rssAfter.rss) - int64(r.rssBefore.rss)) / n, (int64(r.rssAfter.anon) - int64(r.rssBefore.anon)) / n
}

// plugins is row 7. It needs bin/plugins/status-threshold.wasm (make
// build) and the go tool, to build wasm/testdata/empty.
func (e *env) plugins(ctx context.Context) (*pluginsResult, error) {
	res := &pluginsResult{
		module:     "status-threshold.wasm",
		calls:      max(1, e.cfg.pluginCalls/pluginRounds),
		emptyCalls: max(1, e.cfg.pluginCalls*emptyCallsPerPlugin/emptyRounds),
		rounds:     pluginRounds,
	}
	pluginDir, err := filepath.Abs("bin/plugins")
	if err != nil {
		return nil, fmt.Errorf("find bin/plugins: %w", err)
	}
	modPath := filepath.Join(pluginDir, res.module)
	st, err := os.Stat(modPath)
	if err != nil {
		return nil, fmt.Errorf("%w (run make build)", err)
	}
	res.moduleSize = int(st.Size())
	dir, err := os.MkdirTemp(e.work, "plugins-")
	if err != nil {
		return nil, fmt.Errorf("create plugins dir: %w", err)
	}
	e.say("plugins: building wasm/testdata/empty (GOOS=wasip1 GOARCH=wasm, c-shared) ...")
	start := time.Now()
	emptyPath, err := buildGuest(ctx, "./wasm/testdata/empty", filepath.Join(dir, "empty.wasm"))
	if err != nil {
		return nil, err
	}
	res.built = time.Since(start)
	if st, err := os.Stat(emptyPath); err == nil {
		res.emptySize = int(st.Size())
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/status" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, statusDoc)
	}))
	defer srv.Close()

	log := e.log.With().Str("row", "plugins").Logger()
	host, err := wasm.NewHost(ctx, wasm.HostOptions{CacheDir: filepath.Join(dir, "cache"), Log: log})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := host.Close(context.Background()); err != nil {
			e.say("plugins: %v", err)
		}
	}()

	// 1. Per call, warm instances: the empty observe, then status-threshold
	// against the built-in logic, on the host alone and through the
	// observer actor.
	e.say("plugins: empty observe, %d rounds of %s calls in a warm instance", emptyRounds, thousands(float64(res.emptyCalls)))
	empty, err := host.NewPlugin(ctx, wasm.PluginSpec{Path: emptyPath, Observer: "empty", ConfigJSON: []byte(`{}`), Log: log})
	if err != nil {
		return nil, err
	}
	defer empty.Close(context.Background())
	for range emptyRounds + 1 { // the first round warms up
		d, err := timeCalls(res.emptyCalls, func() error {
			_, err := empty.Observe(ctx, time.Now())
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("empty observe: %w", err)
		}
		res.empty = append(res.empty, d)
	}
	res.empty = res.empty[1:]

	client := &http.Client{
		Transport:     &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       pluginWait,
	}
	defer client.CloseIdleConnections()
	spec := wasm.PluginSpec{
		Path:       modPath,
		Observer:   "threshold",
		Target:     wasm.Target{Name: "status", URL: srv.URL},
		ConfigJSON: []byte(`{"threshold":100}`),
		HTTP:       plainDoer{client},
		Log:        log,
	}
	threshold, err := host.NewPlugin(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer threshold.Close(context.Background())
	e.say("plugins: %s against a plain GET + JSON decode, %d rounds of %d calls each", res.module, pluginRounds, res.calls)
	pluginCall := func() error {
		obs, err := threshold.Observe(ctx, time.Now())
		if err == nil && (len(obs) != 1 || !bytes.Contains(obs[0].Payload, []byte(`"value":150`))) {
			err = fmt.Errorf("unexpected observations %v", obs)
		}
		return err
	}
	baselineCall := func() error {
		v, err := getBacklog(ctx, client, srv.URL+"/api/status")
		if err == nil && v != 150 {
			err = fmt.Errorf("baseline: backlog %g, not 150", v)
		}
		return err
	}
	if res.hostPlugin, res.hostBaseline, err = alternate(pluginRounds, res.calls, pluginCall, baselineCall); err != nil {
		return nil, fmt.Errorf("plugin on the host: %w", err)
	}

	e.say("plugins: wasm kind (%s) against the http kind through the observer actor, %d rounds of %d calls each", res.module, pluginRounds, res.calls)
	if res.actorPlugin, res.actorBuiltin, err = e.pluginActors(ctx, host, pluginDir, srv.URL, res.calls); err != nil {
		return nil, err
	}

	// 3 (while this host holds the compiled module). Each further plugin
	// is a fresh instance of it, kept warm after one call.
	e.say("plugins: %d more instances of %s, kept warm", warmInstances, res.module)
	if res.rssBefore, err = settledMem(); err != nil {
		return nil, err
	}
	var warm []*wasm.Plugin
	defer func() {
		for _, p := range warm {
			_ = p.Close(context.Background())
		}
	}()
	for range warmInstances {
		start := time.Now()
		p, err := host.NewPlugin(ctx, spec)
		if err != nil {
			return nil, err
		}
		warm = append(warm, p)
		made := time.Now()
		if _, err := p.Observe(ctx, time.Now()); err != nil {
			return nil, fmt.Errorf("first observe: %w", err)
		}
		res.newPlugin = append(res.newPlugin, made.Sub(start))
		res.firstObserve = append(res.firstObserve, time.Since(made))
	}
	if res.rssAfter, err = settledMem(); err != nil {
		return nil, err
	}
	for _, p := range warm {
		_ = p.Close(context.Background())
	}
	warm = nil
	if res.rssClosed, err = settledMem(); err != nil {
		return nil, err
	}

	// 2. Cold start, alternated: a fresh host on an empty cache dir, and a
	// fresh host on the first one's, warm.
	e.say("plugins: cold start of %s, %d times each without and with the compilation cache", res.module, coldRuns)
	warmDir := ""
	for i := range coldRuns {
		cacheDir := filepath.Join(dir, "cold-"+strconv.Itoa(i))
		nh, took, err := checkOnFreshHost(ctx, cacheDir, modPath, log)
		if err != nil {
			return nil, err
		}
		res.newHost = append(res.newHost, nh)
		res.cold = append(res.cold, took)
		if warmDir == "" {
			warmDir = cacheDir
		}
		nh, took, err = checkOnFreshHost(ctx, warmDir, modPath, log)
		if err != nil {
			return nil, err
		}
		res.newHost = append(res.newHost, nh)
		res.warm = append(res.warm, took)
	}
	e.say("plugins: empty observe %s; %s %s per call against %s built-in (observer actor); cold start %s, cached %s; instantiate %s",
		us(res.emptyCall()), res.module, us(res.actorPluginCall()), us(res.actorBuiltinCall()),
		ms(medianDuration(res.cold)), ms(medianDuration(res.warm)), ms(res.instantiate()))
	return res, nil
}

// pluginActors runs one observer of each kind against target, each asked
// for an observation with ObserveNow and timed until it reaches a stand-in
// state actor; rounds alternate, as in alternate.
func (e *env) pluginActors(ctx context.Context, host *wasm.Host, pluginDir, target string, calls int) (plugin, builtin []time.Duration, err error) {
	doc := fmt.Sprintf(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: bench-plugins}
spec:
  target: {name: status, url: %q}
  limits: {max_requests_per_second: 1000000, max_concurrent_requests: 4}
  observers:
    - {name: builtin, kind: http, interval: 1h, http: {path: /api/status, extract: [/backlog]}}
    - {name: plugin, kind: wasm, interval: 1h, wasm: {module: status-threshold.wasm, config: {threshold: 100}}}
`, target)
	allowed := configs.Default().Targets()
	p, err := policy.Parse("bench-plugins.yaml", []byte(doc), benchEnv(allowed, pluginDir, nil))
	if err != nil {
		return nil, nil, fmt.Errorf("plugins policy: %w", err)
	}
	access := kinds.NewTargetAccess(p, allowed, nil)
	defer access.Close()
	ask := map[string]func() error{}
	for _, o := range p.Spec.Observers {
		evs := make(chan *messages.Event, 16)
		state := e.sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
			if m, ok := c.Message().(*protocol.Emit); ok && (m.Event.GetHttp() != nil || m.Event.GetPlugin() != nil) {
				evs <- m.Event
			}
		}))
		defer e.sys.Root.Stop(state)
		pid := e.sys.Root.Spawn(observer.Props(observer.Spec{
			Policy: p, Observer: o, CorrelationID: "bench", Access: access, State: state,
			Plugins: host, PluginDir: pluginDir, Log: e.log.With().Str("row", "plugins").Logger(),
		}))
		defer func() { _ = e.sys.Root.StopFuture(pid).Wait() }()
		check := checkHTTPEvent
		if o.Kind == "wasm" {
			check = checkPluginEvent
		}
		ask[o.Kind] = func() error {
			e.sys.Root.Send(pid, &protocol.RunNow{})
			select {
			case ev := <-evs:
				return check(ev)
			case <-time.After(pluginWait):
				return fmt.Errorf("%s observer: no observation within %s", o.Kind, pluginWait)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	plugin, builtin, err = alternate(pluginRounds, calls, ask["wasm"], ask["http"])
	if err != nil {
		return nil, nil, fmt.Errorf("observer actors: %w", err)
	}
	return plugin, builtin, nil
}

func checkHTTPEvent(ev *messages.Event) error {
	h := ev.GetHttp()
	if h.GetResult() != messages.Result_RESULT_OK || h.GetValues()["/backlog"] != "150" {
		return fmt.Errorf("http observer: unexpected observation %v", h)
	}
	return nil
}

func checkPluginEvent(ev *messages.Event) error {
	p := ev.GetPlugin()
	if ev.Severity != messages.Severity_SEVERITY_HIGH || !bytes.Contains(p.GetPayload(), []byte(`"value":150`)) {
		return fmt.Errorf("wasm observer: unexpected observation %v %v (%s)", ev.Type, ev.Severity, p.GetPayload())
	}
	return nil
}

// alternate runs rounds of calls of a and of b, after one unmeasured round
// of each, swapping which goes first every round, and returns the mean
// time per call of each round.
func alternate(rounds, calls int, a, b func() error) (as, bs []time.Duration, err error) {
	for _, f := range []func() error{a, b} {
		if _, err := timeCalls(max(1, calls/4), f); err != nil {
			return nil, nil, err
		}
	}
	for i := range rounds {
		order := []bool{true, false}
		if i%2 == 1 {
			order = []bool{false, true}
		}
		for _, first := range order {
			f := b
			if first {
				f = a
			}
			d, err := timeCalls(calls, f)
			if err != nil {
				return nil, nil, err
			}
			if first {
				as = append(as, d)
			} else {
				bs = append(bs, d)
			}
		}
	}
	return as, bs, nil
}

// timeCalls calls f n times and returns the mean time per call.
func timeCalls(n int, f func() error) (time.Duration, error) {
	start := time.Now()
	for range n {
		if err := f(); err != nil {
			return 0, err
		}
	}
	return time.Since(start) / time.Duration(n), nil
}

// getBacklog is the built-in logic without the actor: GET the status,
// decode the JSON and look the number at /backlog up.
func getBacklog(ctx context.Context, client *http.Client, url string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, wasm.MaxBodyBytes))
	if err != nil {
		return 0, err
	}
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		return 0, err
	}
	m, _ := doc.(map[string]any)
	v, ok := m["backlog"].(float64)
	if !ok {
		return 0, fmt.Errorf("baseline: no number at /backlog in %s", body)
	}
	return v, nil
}

// checkOnFreshHost starts a host on cacheDir and checks the module at
// path: the time to a host, and Check's.
func checkOnFreshHost(ctx context.Context, cacheDir, path string, log zerolog.Logger) (newHost, check time.Duration, err error) {
	start := time.Now()
	h, err := wasm.NewHost(ctx, wasm.HostOptions{CacheDir: cacheDir, Log: log})
	if err != nil {
		return 0, 0, err
	}
	newHost = time.Since(start)
	start = time.Now()
	_, err = h.Check(ctx, path, 0)
	check = time.Since(start)
	if cerr := h.Close(context.Background()); err == nil {
		err = cerr
	}
	return newHost, check, err
}

// settledMem reads this process's memory after a GC that returns what it
// can to the OS, so that two readings differ by what is really held.
func settledMem() (procMem, error) {
	runtime.GC()
	debug.FreeOSMemory()
	return readProcMem()
}

// buildGuest builds the Go plugin in pkg (relative to the module root,
// where the bench runs) into out, the way make build builds the examples.
func buildGuest(ctx context.Context, pkg, out string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildmode=c-shared", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

// plainDoer is the plugin's http_request without the policy's limits: one
// round trip of a plain client, loopback allowed.
type plainDoer struct{ client *http.Client }

func (d plainDoer) Do(req *http.Request) (*http.Response, error) { return d.client.Do(req) }

func (d plainDoer) Allowed(u *url.URL) error {
	if !configs.Default().Targets().AllowsHost(u.Hostname()) {
		return errors.New("not loopback")
	}
	return nil
}

// medianDuration is the median of ds (the mean of the middle two of an
// even count).
func medianDuration(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// us renders a per-call duration in microseconds.
func us(d time.Duration) string {
	f := float64(d.Nanoseconds()) / 1000
	if f < 10 {
		return fmt.Sprintf("%.2f µs", f)
	}
	return fmt.Sprintf("%.0f µs", f)
}
