// Package epaxos is the EPaxos engine (placeholder doc, expanded below).
package epaxos
