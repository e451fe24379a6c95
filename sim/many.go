package sim

import (
	"context"
	"runtime"
	"sync"
)

// RunSeeds runs count seeds starting at cfg.Seed (cfg.Seed, cfg.Seed+1, ...) on workers
// goroutines (0 = GOMAXPROCS) and calls each with every result in seed order, from the
// calling goroutine. Seeds are independent, and every run is single-threaded and
// deterministic, so running them in parallel changes nothing but the wall-clock time.
// cfg.Trace is ignored (a trace is for one seed; use Run). It stops early, returning
// ctx.Err(), when ctx is cancelled; each may also return false to stop.
func RunSeeds(ctx context.Context, cfg Config, count int, workers int, each func(Result) bool) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = max(1, min(workers, count))
	cfg.Trace = nil
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type done struct {
		i   int
		res Result
	}
	jobs := make(chan int)
	out := make(chan done, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				c := cfg
				c.Seed = cfg.Seed + uint64(i)
				r := Run(c)
				select {
				case out <- done{i, r}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		defer close(jobs)
		for i := range count {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		wg.Wait()
		close(out)
	}()

	// Deliver in seed order: park results that arrive early.
	parked := map[int]Result{}
	next := 0
	for d := range out {
		parked[d.i] = d.res
		for {
			r, ok := parked[next]
			if !ok {
				break
			}
			delete(parked, next)
			next++
			if !each(r) {
				cancel()
				for range out { // let the workers finish their current seed and exit
				}
				return nil
			}
		}
	}
	return ctx.Err()
}
