// Package e2e holds observerd's end-to-end tests: the real binaries
// (bin/observerd, bin/observable) as processes, a private RabbitMQ node
// with TLS (test/rabbitmq), and an independent AMQP consumer checking what
// arrives. They carry the integration build tag and run in `make test`.
package e2e
