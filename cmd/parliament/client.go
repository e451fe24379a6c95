package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/parliament-lab/parliament/client"
	"github.com/parliament-lab/parliament/config"
	"github.com/parliament-lab/parliament/protocol"
)

func init() {
	register(command{
		name:    "client",
		summary: "put, get or compare-and-set a key",
		run:     runClient,
	})
}

const clientExamples = `  parliament client --config cluster.yaml put greeting hello
  parliament client --config cluster.yaml get greeting          # prints hello; exit 1 if absent
  parliament client --config cluster.yaml --replica 2 cas greeting hello bonjour`

func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("client", "--config FILE [--replica ID] put KEY VALUE | get KEY | cas KEY OLD NEW", clientExamples, stderr)
	path := fs.String("config", "cluster.yaml", "cluster file (see 'parliament config')")
	rid := fs.Uint("replica", 0, "replica to send the command to (0 = any live replica)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	attempt := fs.Duration("attempt-timeout", 500*time.Millisecond, "resend (same command ID) after this long without a reply")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	want := map[string]int{"put": 3, "get": 2, "cas": 4}
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "parliament client: missing command: put, get or cas")
		fs.Usage()
		return errUsage
	}
	n, ok := want[rest[0]]
	if !ok {
		fmt.Fprintf(stderr, "parliament client: unknown command %q: use put, get or cas\n", rest[0])
		fs.Usage()
		return errUsage
	}
	if len(rest) != n {
		fmt.Fprintf(stderr, "parliament client: %s takes %d argument(s), got %d\n", rest[0], n-1, len(rest)-1)
		fs.Usage()
		return errUsage
	}
	if *timeout <= 0 || *attempt <= 0 {
		return errors.New("--timeout and --attempt-timeout must be positive")
	}
	cl, err := config.Load(*path)
	if err != nil {
		return err
	}
	if *rid != 0 {
		if _, ok := cl.Lookup(protocol.ReplicaID(*rid)); !ok {
			return fmt.Errorf("--replica %d: %s has replicas 1..%d", *rid, *path, len(cl.Replicas))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c, err := client.New(client.Options{Cluster: cl, Replica: protocol.ReplicaID(*rid), Timeout: *attempt, DialTimeout: min(*timeout, 2*time.Second)})
	if err != nil {
		return err
	}
	defer c.Close()
	key := []byte(rest[1])
	switch rest[0] {
	case "put":
		return c.Put(ctx, key, []byte(rest[2]))
	case "get":
		v, found, err := c.Get(ctx, key)
		if err != nil {
			return err
		}
		if !found {
			fmt.Fprintf(stderr, "parliament client: key %s not found\n", strconv.Quote(rest[1]))
			return exitError{1}
		}
		_, err = fmt.Fprintf(stdout, "%s\n", v)
		return err
	case "cas":
		ok, cur, err := c.CAS(ctx, key, []byte(rest[2]), []byte(rest[3]))
		if err != nil {
			return err
		}
		if !ok {
			fmt.Fprintf(stderr, "parliament client: cas failed: %s is %s, not %s\n", strconv.Quote(rest[1]), strconv.Quote(string(cur)), strconv.Quote(rest[2]))
			return exitError{1}
		}
	}
	return nil
}
