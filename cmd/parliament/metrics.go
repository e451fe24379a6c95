package main

import "github.com/parliament-lab/parliament/metrics/exporter"

// The replica subcommand serves Prometheus metrics through this hook (--metrics ADDR), so
// that replica.go does not depend on the Prometheus client when metrics are off.
func init() { serveMetrics = exporter.ServeReplica }
