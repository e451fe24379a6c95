package main

import (
	"context"
	"fmt"
	"io"

	"github.com/parliament-lab/parliament/config"
)

func init() {
	register(command{
		name:    "config",
		summary: "write a loopback cluster file (YAML) to stdout",
		run:     runConfig,
	})
}

const configExamples = `  parliament config --protocol multipaxos --replicas 3 --port 7000 > cluster.yaml
  parliament config --protocol epaxos --replicas 5 --port 7000 --data /var/lib/parliament > cluster.yaml`

func runConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config", "--protocol epaxos|multipaxos --replicas N --port PORT [--data DIR] > cluster.yaml", configExamples, stderr)
	proto := fs.String("protocol", config.MultiPaxos, "replication protocol: epaxos or multipaxos")
	n := fs.Int("replicas", 3, "number of replicas (epaxos: odd, at least 3)")
	port := fs.Int("port", 7000, "port of replica 1; replica N listens on port+N-1 on 127.0.0.1")
	data := fs.String("data", "", "base data directory; replica N keeps its data in DIR/N (default ./"+config.DefaultDataDir+"/N)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "parliament config: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	if *n < 1 {
		return fmt.Errorf("--replicas %d: need at least 1", *n)
	}
	if *port < 1 || *port+*n-1 > 65535 {
		return fmt.Errorf("--port %d: the ports %d..%d must lie in 1..65535", *port, *port, *port+*n-1)
	}
	c := config.Generate(*proto, *n, *port, *data)
	if err := c.Validate(); err != nil {
		return err
	}
	b, err := c.Marshal()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# Parliament cluster file: 'parliament replica --config FILE --id N' runs replica N.\n")
	_, err = stdout.Write(b)
	return err
}
