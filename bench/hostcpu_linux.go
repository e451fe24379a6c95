package bench

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuSample is the machine's busy CPU time and this process's CPU time at one moment.
type cpuSample struct {
	at         time.Time
	busy, self time.Duration
	ok         bool
}

// userHZ is the unit of /proc/stat (USER_HZ, 100 on every Linux architecture Go supports).
const userHZ = 100

func sampleCPU() cpuSample {
	s := cpuSample{at: time.Now()}
	f, err := os.Open("/proc/stat")
	if err != nil {
		return s
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return s
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 5 || fields[0] != "cpu" {
		return s
	}
	// user nice system idle iowait irq softirq steal guest guest_nice: busy is user,
	// nice, system and steal (another VM's time is a disturbance too). Interrupt time is
	// left out: it is not charged to any process, and most of it is the benchmark's own
	// loopback traffic. Guest time is already counted in user and nice.
	var busy int64
	for i, v := range fields[1:min(len(fields), 9)] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return s
		}
		switch i {
		case 0, 1, 2, 7:
			busy += n
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return s
	}
	s.busy = time.Duration(busy) * time.Second / userHZ
	s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	s.ok = true
	return s
}
