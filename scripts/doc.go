// Package scripts holds the shell scripts that run Parliament on real machines and the
// whole benchmark suite: wan.sh (tc netem WAN emulation), cluster.sh (replicas over ssh)
// and suite.sh (benchmark and charts into results/). This Go package only exists for
// scripts_test.go, which checks their --dry-run output against golden files and runs
// shellcheck on them.
package scripts
