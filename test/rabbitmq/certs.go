package rabbitmq

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certValidity is generous so that a long debugging session never trips over
// an expired certificate; every Start generates fresh ones anyway.
const certValidity = 30 * 24 * time.Hour

// issuer is a CA that can sign leaf certificates.
type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// certFiles names the PEM files of the test PKI: the CA, the client
// certificates and the untrusted CA, shared by every node of a cluster.
type certFiles struct {
	ca, clientCert, clientKey                string
	untrustedCA, untrustedCert, untrustedKey string
}

// pki is the harness CA and the files it wrote.
type pki struct {
	ca    *issuer
	files certFiles
}

// newPKI generates the test PKI into dir: a CA, a client certificate
// CN=observer signed by it, and an unrelated CA with its own CN=observer
// client certificate for negative tests. Server certificates are issued
// per node with serverCert.
func newPKI(dir string) (*pki, error) {
	f := certFiles{
		ca:            filepath.Join(dir, "ca.pem"),
		clientCert:    filepath.Join(dir, "client.pem"),
		clientKey:     filepath.Join(dir, "client-key.pem"),
		untrustedCA:   filepath.Join(dir, "untrusted-ca.pem"),
		untrustedCert: filepath.Join(dir, "untrusted-client.pem"),
		untrustedKey:  filepath.Join(dir, "untrusted-client-key.pem"),
	}
	now := time.Now()

	ca, err := newCA("observerd test CA", now)
	if err != nil {
		return nil, err
	}
	if err := writeCertPEM(f.ca, ca.cert.Raw); err != nil {
		return nil, err
	}
	client := &x509.Certificate{
		Subject:     pkix.Name{CommonName: User},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := ca.issue(client, now, f.clientCert, f.clientKey); err != nil {
		return nil, err
	}

	untrusted, err := newCA("observerd untrusted test CA", now)
	if err != nil {
		return nil, err
	}
	if err := writeCertPEM(f.untrustedCA, untrusted.cert.Raw); err != nil {
		return nil, err
	}
	stranger := &x509.Certificate{
		Subject:     pkix.Name{CommonName: User},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := untrusted.issue(stranger, now, f.untrustedCert, f.untrustedKey); err != nil {
		return nil, err
	}
	return &pki{ca: ca, files: f}, nil
}

// serverCert issues a server certificate valid for exactly dnsNames and
// ips into dir (server.pem, server-key.pem) and returns the two paths.
func (p *pki) serverCert(dir string, dnsNames []string, ips []net.IP) (cert, key string, err error) {
	cert, key = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: dnsNames[0]},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return cert, key, p.ca.issue(server, time.Now(), cert, key)
}

func newCA(name string, now time.Time) (*issuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate %q: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate %q: %w", name, err)
	}
	return &issuer{cert: cert, key: key}, nil
}

// issue signs tmpl (subject, SANs and extended key usage filled in by the
// caller) with a fresh key and writes certificate and key as PEM files.
func (ca *issuer) issue(tmpl *x509.Certificate, now time.Time, certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key for %q: %w", tmpl.Subject.CommonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(certValidity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return fmt.Errorf("create certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	if err := writeCertPEM(certFile, der); err != nil {
		return err
	}
	// SEC1 ("EC PRIVATE KEY") is read by both Erlang's ssl and Go's crypto/tls.
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key for %q: %w", tmpl.Subject.CommonName, err)
	}
	return writePEM(keyFile, "EC PRIVATE KEY", keyDER, 0o600)
}

func writeCertPEM(path string, der []byte) error {
	return writePEM(path, "CERTIFICATE", der, 0o644)
}

func writePEM(path, blockType string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	return writeFile(path, data, mode)
}

// writeFile replaces path with data and mode, also when path exists with a
// different (for example read-only) mode from an earlier Start in the same Dir.
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove old %s: %w", path, err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// WriteFile's mode is filtered by the umask; private files must be exact.
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial, nil
}
