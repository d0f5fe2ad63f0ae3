package configs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
	amqp "github.com/rabbitmq/amqp091-go"
)

func (b *Broker) validate(r *yamldoc.Report) {
	if len(b.URLs) == 0 {
		r.Addf("broker.urls", "at least one URL is required")
	}
	schemes := map[string]bool{}
	for i, raw := range b.URLs {
		for _, msg := range b.urlProblems(raw) {
			r.Addf(fmt.Sprintf("broker.urls[%d]", i), "%s", msg)
		}
		if u, err := url.Parse(raw); err == nil {
			schemes[u.Scheme] = true
		}
	}
	if schemes["amqps"] && schemes["amqp"] {
		r.Addf("broker.urls", "mixes amqps:// and amqp://: a failover would silently drop TLS; use amqps:// for every node")
	}

	oneOf(r, "broker.url_order", b.URLOrder, "spread", "listed")
	oneOf(r, "broker.auth", b.Auth, "plain", "external")
	t := &b.TLS
	if b.Auth == "external" && (t.CertFile == "" || t.KeyFile == "") {
		r.Addf("broker.auth", "external authentication uses a client certificate: set broker.tls.cert_file and broker.tls.key_file")
	}
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		r.Addf("broker.tls.key_file", "required when broker.tls.cert_file is set")
	case t.KeyFile != "" && t.CertFile == "":
		r.Addf("broker.tls.cert_file", "required when broker.tls.key_file is set")
	}
	readable := map[string]bool{}
	for _, f := range []struct{ path, file string }{
		{"broker.password_file", b.PasswordFile},
		{"broker.tls.ca_file", t.CAFile},
		{"broker.tls.cert_file", t.CertFile},
		{"broker.tls.key_file", t.KeyFile},
	} {
		if f.file == "" {
			continue
		}
		if err := checkReadable(f.file); err != nil {
			r.Addf(f.path, "%v", err)
			continue
		}
		if f.path == "broker.password_file" || f.path == "broker.tls.key_file" {
			// Read as the daemon will read it: mode, type and size.
			if _, err := ReadSecret(f.file); err != nil {
				r.Addf(f.path, "%v", err)
				continue
			}
		}
		readable[f.path] = true
	}
	if readable["broker.tls.ca_file"] {
		if _, err := loadCA(t.CAFile); err != nil {
			r.Addf("broker.tls.ca_file", "%v", err)
		}
	}
	if readable["broker.tls.cert_file"] && readable["broker.tls.key_file"] {
		if _, err := t.clientCertificate(); err != nil {
			r.Addf("broker.tls.cert_file", "%v", err)
		}
	}
	if _, err := tlsVersion(t.MinVersion); err != nil {
		r.Addf("broker.tls.min_version", "%v", err)
	}
	if t.ServerName != "" {
		if _, err := netip.ParseAddr(t.ServerName); err != nil {
			if _, err := targets.HostName(t.ServerName); err != nil {
				r.Addf("broker.tls.server_name", "%v", err)
			}
		}
	}

	checkAMQPName(r, "broker.exchange", b.Exchange)
	oneOf(r, "broker.encoding", b.Encoding, "protobuf", "json")
	if b.ConfirmWindow < 1 || b.ConfirmWindow > 65535 {
		r.Addf("broker.confirm_window", "must be between 1 and 65535, got %d", b.ConfirmWindow)
	}
	// Heartbeats are what detect a broker that vanished without closing the
	// connection, so they cannot be disabled; AMQP counts them in seconds.
	switch h := time.Duration(b.Heartbeat); {
	case h < time.Second:
		r.Addf("broker.heartbeat", "must be at least 1s (heartbeats detect a dead connection and cannot be disabled), got %s", b.Heartbeat)
	case h%time.Second != 0:
		r.Addf("broker.heartbeat", "AMQP counts heartbeats in whole seconds, got %s", b.Heartbeat)
	case h > 65535*time.Second:
		r.Addf("broker.heartbeat", "must be at most 65535s, got %s", b.Heartbeat)
	}

	first := map[string]int{}
	for i, q := range b.Queues {
		path := fmt.Sprintf("broker.queues[%d]", i)
		checkAMQPName(r, path+".name", q.Name)
		if j, dup := first[q.Name]; dup && q.Name != "" {
			r.Addf(path+".name", "duplicate queue name; first at %s", r.Where(fmt.Sprintf("broker.queues[%d].name", j)))
		} else {
			first[q.Name] = i
		}
		oneOf(r, path+".type", q.Type, "quorum", "classic")
		for j, pattern := range q.Bindings {
			if err := checkTopicPattern(pattern); err != nil {
				r.Addf(fmt.Sprintf("%s.bindings[%d]", path, j), "%v", err)
			}
		}
	}
}

// urlProblems lists what is wrong with one broker URL. Messages never
// show the URL: the key path names it, and it may hold a password.
func (b *Broker) urlProblems(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil {
		return []string{"invalid URL"}
	}
	var out []string
	switch u.Scheme {
	case "amqps":
	case "amqp":
		if !b.AllowInsecure {
			out = append(out, "amqp:// is not encrypted: the password and every event would cross the network in plaintext; "+
				"use amqps://, or set broker.allow_insecure: true to accept that")
		}
	default:
		out = append(out, "unsupported scheme; use amqps:// (or amqp:// with broker.allow_insecure: true)")
	}
	if u.Hostname() == "" {
		out = append(out, "the URL has no host")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			out = append(out, "invalid port: use 1 to 65535")
		}
	}
	if _, has := u.User.Password(); has {
		out = append(out, fmt.Sprintf("the URL holds a password; secrets go in broker.password_file or the %s environment variable, never in the config", PasswordEnv))
	}
	if u.RawQuery != "" {
		out = append(out, "query parameters are not supported; use the broker.* keys (tls, heartbeat, auth)")
	}
	if len(out) == 0 {
		if _, err := amqp.ParseURI(raw); err != nil {
			out = append(out, "invalid AMQP URL")
		}
	}
	return out
}

// RedactURL returns the URL with its password replaced by "xxxxx", safe for
// logs and messages; a URL without a password comes back unchanged. A URL
// that does not parse, or parses ambiguously (an "@" after the host), is
// still redacted: everything between "user:" and the last "@" goes.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err == nil && u.Opaque == "" && !strings.Contains(u.Path+u.RawQuery+u.Fragment, "@") {
		if _, has := u.User.Password(); !has {
			return raw
		}
		return u.Redacted()
	}
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		_, rest, _ = strings.Cut(raw, ":") // opaque form, scheme:user:pass@host
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return raw
	}
	prefix := raw[:len(raw)-len(rest)]
	user, _, hasPassword := strings.Cut(rest[:at], ":")
	if !hasPassword {
		return raw
	}
	return prefix + user + ":xxxxx" + rest[at:]
}

// checkLoopback accepts a host:port on a loopback address: the admin
// endpoint has no authentication, so it must not be reachable from the
// network.
func checkLoopback(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("invalid address: want host:port, like 127.0.0.1:9464")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("invalid port: use 1 to 65535")
	}
	if host == "localhost" {
		return nil
	}
	if addr, err := netip.ParseAddr(host); err == nil && addr.IsLoopback() {
		return nil
	}
	if host == "" {
		return fmt.Errorf("the address listens on every interface; use 127.0.0.1, [::1] or localhost: the network must not reach the admin endpoint")
	}
	return fmt.Errorf("not a loopback address; use 127.0.0.1, [::1] or localhost: the network must not reach the admin endpoint")
}

var amqpName = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,255}$`)

// checkAMQPName checks an exchange or queue name against AMQP 0-9-1's
// charset, and the amq. prefix the broker reserves for itself.
func checkAMQPName(r *yamldoc.Report, path, name string) {
	switch {
	case name == "":
		r.Addf(path, "must not be empty")
	case !amqpName.MatchString(name):
		r.Addf(path, "invalid name: use up to 255 letters, digits, '-', '_', '.' and ':'")
	case strings.HasPrefix(name, "amq."):
		r.Addf(path, "invalid name: names starting with amq. are reserved by the broker")
	}
}

// checkTopicPattern checks a binding pattern of a topic exchange: words
// separated by dots, where * (one word) and # (any words) stand alone.
func checkTopicPattern(pattern string) error {
	if pattern == "" {
		return errors.New("empty topic pattern")
	}
	if len(pattern) > 255 {
		return fmt.Errorf("topic pattern longer than 255 bytes")
	}
	for word := range strings.SplitSeq(pattern, ".") {
		if word == "" {
			return fmt.Errorf("invalid topic pattern: empty word (two dots in a row, or a dot at an end)")
		}
		if word != "*" && word != "#" && strings.ContainsAny(word, "*#") {
			return fmt.Errorf("invalid topic pattern: * and # must stand alone between dots, as in observation.* or observation.#")
		}
	}
	return nil
}

// checkReadable tells apart a missing, unreadable and directory path, and
// names it, since the key alone does not say which file the daemon tried.
func checkReadable(file string) error {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NONBLOCK, 0) // a FIFO must not hang the check
	if err != nil {
		if pe, ok := errors.AsType[*fs.PathError](err); ok {
			err = pe.Err
		}
		return fmt.Errorf("cannot read %s: %v", file, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return fmt.Errorf("%s is a directory, not a file", file)
	}
	return nil
}

// Password returns the broker password: the content of
// broker.password_file (trailing newlines trimmed), read afresh at every
// call so that a rotated password needs no restart, else env (the value
// of OBSERVERD_AMQP_PASSWORD, which the daemon takes out of its
// environment at start: see TakePasswordEnv).
func (b *Broker) Password(env string) (string, error) {
	if f := b.PasswordFile; f != "" {
		data, err := ReadSecret(f)
		if err != nil {
			return "", fmt.Errorf("read broker.password_file: %w", err)
		}
		return strings.TrimRight(string(data), "\r\n"), nil
	}
	return env, nil
}

// TakePasswordEnv returns OBSERVERD_AMQP_PASSWORD and removes it from the
// process's environment, so that no child process and no later reader of
// the environment sees it.
func TakePasswordEnv() string {
	pw := os.Getenv(PasswordEnv)
	os.Unsetenv(PasswordEnv)
	return pw
}

// maxSecretSize bounds a password or key file: a secret of more is a
// mistaken path, not a secret.
const maxSecretSize = 64 << 10

// ReadSecret reads a password or private key file, refusing one that is
// not a regular file, is larger than 64KiB, or whose mode lets anyone but
// its owner and group read it or anyone but its owner write it, as ssh
// refuses such keys: a secret others can read is no longer one, and one
// others can write lets them choose the daemon's credentials.
func ReadSecret(file string) ([]byte, error) {
	return readFile(file, maxSecretSize, "a secret", secretMode)
}

// maxPEMSize bounds a CA bundle or certificate file (a system bundle of
// every public root is about 200KiB).
const maxPEMSize = 4 << 20

// readPEM reads a CA bundle or a certificate: a regular file of at most
// 4MiB, so that a path to a device or a FIFO fails instead of hanging.
func readPEM(file string) ([]byte, error) {
	return readFile(file, maxPEMSize, "a certificate", func(file string, st fs.FileInfo) error {
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", file)
		}
		return nil
	})
}

// readFile reads a regular file of at most limit bytes that check accepts.
// It opens without blocking, so that a FIFO cannot hold it.
func readFile(file string, limit int64, what string, check func(string, fs.FileInfo) error) ([]byte, error) {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := check(file, st); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %s; this is not %s file", file, yamldoc.ByteSize(limit), what)
	}
	return data, nil
}

func secretMode(file string, st fs.FileInfo) error {
	switch mode := st.Mode(); {
	case !mode.IsRegular():
		return fmt.Errorf("%s is not a regular file", file)
	case mode.Perm()&0o027 != 0:
		return fmt.Errorf("%s has mode %04o: a secret must not be writable by its group nor accessible by others (chmod 0600, or 0640 to share it with the daemon's group)",
			file, mode.Perm())
	}
	// Its owner can rewrite it whatever the mode: only root or the user
	// reading it may own it, as ssh requires of keys.
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("%s is owned by uid %d: a secret must be owned by root or by the user that reads it (uid %d)", file, sys.Uid, os.Geteuid())
	}
	return nil
}

// ClientTLS builds the TLS client configuration of the broker connection,
// reading the CA, certificate and key files afresh (call it at every dial,
// so that rotated files need no restart):
// RootCAs from tls.ca_file (the system pool when empty), the client
// certificate when cert_file and key_file are set, MinVersion from
// min_version. It never skips verification.
//
// ServerName is tls.server_name; when that is empty it stays empty and
// amqp091-go's DialConfig sets it to the host of the URL being dialled, in
// place on the config it is given. So build a fresh config (or Clone) for
// every dial: reused across a failover, it would verify the second broker
// against the first one's name.
func (b *Broker) ClientTLS() (*tls.Config, error) {
	version, err := tlsVersion(b.TLS.MinVersion)
	if err != nil {
		return nil, fmt.Errorf("configure broker tls: %w", err)
	}
	cfg := &tls.Config{MinVersion: version, ServerName: b.TLS.ServerName}
	if b.TLS.CAFile != "" {
		cfg.RootCAs, err = loadCA(b.TLS.CAFile)
	} else {
		cfg.RootCAs, err = x509.SystemCertPool()
	}
	if err != nil {
		return nil, fmt.Errorf("configure broker tls: %w", err)
	}
	if b.TLS.CertFile != "" || b.TLS.KeyFile != "" {
		cert, err := b.TLS.clientCertificate()
		if err != nil {
			return nil, fmt.Errorf("configure broker tls: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func (t *TLS) clientCertificate() (tls.Certificate, error) {
	fail := func(err error) (tls.Certificate, error) {
		return tls.Certificate{}, fmt.Errorf("load client certificate %s and key %s: %w", t.CertFile, t.KeyFile, err)
	}
	certPEM, err := readPEM(t.CertFile)
	if err != nil {
		return fail(err)
	}
	keyPEM, err := ReadSecret(t.KeyFile)
	if err != nil {
		return fail(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fail(err)
	}
	return cert, nil
}

func loadCA(file string) (*x509.CertPool, error) {
	data, err := readPEM(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("no PEM certificate found in %s", file)
	}
	return pool, nil
}

func tlsVersion(v string) (uint16, error) {
	switch v {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	case "1.0", "1.1":
		return 0, fmt.Errorf("TLS %s is obsolete and insecure (RFC 8996); use \"1.2\" or \"1.3\"", v)
	}
	return 0, fmt.Errorf("unknown TLS version; use \"1.2\" or \"1.3\"")
}
