package scripts

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// script runs a script with bash in this directory and returns stdout, stderr and whether
// it exited 0.
func script(t *testing.T, args ...string) (string, string, bool) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%v timed out", args)
	}
	return stdout.String(), stderr.String(), err == nil
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./scripts -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s: dry-run output differs from %s\n--- got\n%s--- want\n%s", name, path, got, want)
	}
}

func TestWANDryRun(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
	}{
		{"wan-apply-VA", []string{"wan.sh", "apply", "--matrix", "testdata/aws-5site.csv", "--site", "VA", "--dev", "eth0", "--peers", "testdata/peers.txt", "--dry-run"}},
		{"wan-apply-CA-jitter", []string{"wan.sh", "apply", "--dry-run", "--matrix", "testdata/aws-5site.csv", "--site", "CA", "--dev", "ens5", "--peers", "testdata/peers.txt", "--jitter", "2", "--rate", "1gbit"}},
		{"wan-clear", []string{"wan.sh", "clear", "--dev", "eth0", "--dry-run"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, ok := script(t, c.args...)
			if !ok {
				t.Fatalf("failed: %s", errOut)
			}
			golden(t, c.name, out)
		})
	}
}

// TestWANApplyContent checks the golden file's meaning, not only its bytes: one HTB class,
// netem qdisc and u32 filter per peer at another site, with RTT/2 from the matrix.
func TestWANApplyContent(t *testing.T) {
	out, errOut, ok := script(t, "wan.sh", "apply", "--matrix", "testdata/aws-5site.csv", "--site", "VA", "--dev", "eth0", "--peers", "testdata/peers.txt", "--dry-run")
	if !ok {
		t.Fatal(errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if lines[0] != "tc qdisc del dev eth0 root || true" {
		t.Errorf("apply must start by removing the old tree (idempotence), got %q", lines[0])
	}
	// VA's peers in testdata/peers.txt: CA, OR, IE, JP (the two VA lines are local).
	for _, want := range []string{"netem delay 29.95ms", "netem delay 36.25ms", "netem delay 35.25ms", "netem delay 76.2ms"} {
		if strings.Count(out, want) != 1 {
			t.Errorf("want exactly one %q in\n%s", want, out)
		}
	}
	if strings.Count(out, " u32 match ip dst ") != 4 || strings.Contains(out, "10.0.0.2/32") {
		t.Errorf("want 4 filters and none for the local peer:\n%s", out)
	}
}

func TestWANRejects(t *testing.T) {
	base := []string{"--matrix", "testdata/aws-5site.csv", "--dev", "eth0", "--dry-run"}
	dir := t.TempDir()
	badPeer := filepath.Join(dir, "peers")
	os.WriteFile(badPeer, []byte("CA host.example.com\n"), 0o644)
	unknownSite := filepath.Join(dir, "peers2")
	os.WriteFile(unknownSite, []byte("XX 10.0.0.9\n"), 0o644)
	for _, c := range []struct {
		name string
		args []string
		msg  string
	}{
		{"unknown site", append([]string{"wan.sh", "apply", "--site", "XX", "--peers", "testdata/peers.txt"}, base...), "site XX is not in"},
		{"no dev", []string{"wan.sh", "clear", "--dry-run"}, "--dev is required"},
		{"host name", append([]string{"wan.sh", "apply", "--site", "CA", "--peers", badPeer}, base...), "not an IP address"},
		{"peer site", append([]string{"wan.sh", "apply", "--site", "CA", "--peers", unknownSite}, base...), "site XX is not in"},
		{"bad action", append([]string{"wan.sh", "frobnicate"}, base...), "usage"},
		{"bad dev", []string{"wan.sh", "clear", "--dev", "eth0;rm", "--dry-run"}, "bad device name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, ok := script(t, c.args...)
			if ok {
				t.Fatalf("accepted; printed:\n%s", out)
			}
			if !strings.Contains(errOut, c.msg) {
				t.Errorf("stderr %q lacks %q", errOut, c.msg)
			}
			if out != "" {
				t.Errorf("printed commands before failing:\n%s", out)
			}
		})
	}
}

func TestClusterDryRun(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
	}{
		{"cluster-start", []string{"cluster.sh", "start", "--config", "testdata/cluster.yaml", "--user", "ubuntu", "--dry-run"}},
		{"cluster-start-wan", []string{"cluster.sh", "start", "--config", "testdata/cluster.yaml", "--wan", "testdata/aws-5site.csv", "--dev", "ens5", "--binary", "bin/parliament", "--dir", "/opt/p", "--dry-run"}},
		{"cluster-stop-wan", []string{"cluster.sh", "stop", "--config", "testdata/cluster.yaml", "--wan", "testdata/aws-5site.csv", "--dev", "ens5", "--dry-run"}},
		{"cluster-status", []string{"cluster.sh", "status", "--config", "testdata/cluster.yaml", "--ssh-opts", "-o Port=2222 -o BatchMode=yes", "--dry-run"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, ok := script(t, c.args...)
			if !ok {
				t.Fatalf("failed: %s", errOut)
			}
			golden(t, c.name, out)
		})
	}
	// Content: one replica start per replica, files copied once per host.
	out, _, _ := script(t, "cluster.sh", "start", "--config", "testdata/cluster.yaml", "--dry-run")
	if n := strings.Count(out, " replica --config cluster.yaml --id "); n != 4 {
		t.Errorf("%d replica starts, want 4:\n%s", n, out)
	}
	if n := strings.Count(out, "scp "); n != 3 {
		t.Errorf("%d copies, want 3 (one per host):\n%s", n, out)
	}
	if _, errOut, ok := script(t, "cluster.sh", "start", "--config", "testdata/cluster.yaml", "--wan", "testdata/aws-5site.csv", "--dry-run"); ok || !strings.Contains(errOut, "--dev") {
		t.Errorf("--wan without --dev accepted: %s", errOut)
	}
}

func TestShellcheck(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Skip("shellcheck not installed (CI installs it in .ci/run)")
	}
	out, err := exec.Command(sc, "wan.sh", "cluster.sh", "suite.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("shellcheck: %v\n%s", err, out)
	}
}
