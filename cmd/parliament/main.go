// Command parliament is the one binary of the project: replica, client, config, bench, sim
// and plot subcommands. Each subcommand lives in its own file and registers itself in
// init(); main only dispatches. Subcommands parse their own flags (flag.ContinueOnError),
// print usage with examples on --help, and turn every error into one line on stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand.
type command struct {
	name    string
	summary string // one line for the top-level usage
	// run parses args (everything after the subcommand name) and does the work. ctx is
	// cancelled on SIGINT/SIGTERM. Returning errUsage prints nothing more (flag already
	// printed the problem); any other error is printed as one line.
	run func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{}

// register adds a subcommand; called from init() in each subcommand's file.
func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("parliament: subcommand registered twice: " + c.name)
	}
	commands[c.name] = c
}

// errUsage reports a usage error that was already explained to the user.
var errUsage = errors.New("usage error")

// exitError carries a specific exit status (for example 1 from `sim` on a violation)
// without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: parliament <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'parliament <command> --help' for the flags of a command.")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "parliament: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := c.run(ctx, args[1:], stdout, stderr)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintf(stderr, "parliament %s: %v\n", c.name, err)
		return 1
	}
}

// newFlagSet returns a flag set for a subcommand whose usage prints the synopsis, the
// examples and the flags.
func newFlagSet(name, synopsis, examples string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("parliament "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: parliament %s %s\n", name, synopsis)
		if examples != "" {
			fmt.Fprintf(stderr, "\nexamples:\n%s\n", examples)
		}
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and maps flag errors to errUsage (flag has printed them).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}
