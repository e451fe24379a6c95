package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/parliament-lab/parliament/bench/plot"
	"github.com/parliament-lab/parliament/bench/result"
)

func init() {
	register(command{
		name:    "plot",
		summary: "draw the benchmark charts (PNG and SVG) from a results directory",
		run:     runPlot,
	})
}

func runPlot(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("plot", "[--out DIR] RESULTS_DIR",
		"  parliament plot results/2026-05-01-abc1234\n  parliament plot --out /tmp/charts results/latest/results.json",
		stderr)
	out := fs.String("out", "", "directory for the charts (default: the results directory itself)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "parliament plot: want exactly one results directory (or results.json file)")
		fs.Usage()
		return errUsage
	}
	src := fs.Arg(0)
	f, err := result.Read(src)
	if err != nil {
		return err
	}
	dir := *out
	if dir == "" {
		dir = src
		if filepath.Ext(src) == ".json" {
			dir = filepath.Dir(src)
		}
	}
	charts, err := plot.All(f, dir)
	if err != nil {
		return err
	}
	if len(charts) == 0 {
		return fmt.Errorf("%s holds no runs to plot", src)
	}
	for _, c := range charts {
		fmt.Fprintf(stdout, "%s.png %s.svg  %s\n", filepath.Join(dir, c.Name), filepath.Join(dir, c.Name), c.Title)
	}
	return nil
}
