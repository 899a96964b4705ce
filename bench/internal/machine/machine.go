// Package machine describes the machine a benchmark runs on, for the
// report header every figure needs (cores, CPU, kernel, Go, open-file
// limit), and holds the statistics the harnesses share.
package machine

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
)

// Describe returns "N cores, CPU, kernel K, go V, open-file limit L".
func Describe() string {
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	return fmt.Sprintf("%d cores, %s, kernel %s, %s, open-file limit soft %d hard %d",
		runtime.NumCPU(), cpu, strings.TrimSpace(string(kernel)), runtime.Version(), rl.Cur, rl.Max)
}

// Percentile returns the p-quantile (0..1) of v.
func Percentile(v []float64, p float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[int(float64(len(s)-1)*p)]
}

// Median is Percentile(v, 0.5).
func Median(v []float64) float64 { return Percentile(v, 0.5) }

// All renders every value, rounded, for the raw figures.
func All(v []float64) string {
	var parts []string
	for _, x := range v {
		parts = append(parts, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(parts, " ")
}

// Relayd returns the relayd binary to measure: path when given, else one
// built from ./cmd/relayd into dir.
func Relayd(path, dir string) (string, error) {
	if path != "" {
		return path, nil
	}
	bin := filepath.Join(dir, "relayd")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/relayd").CombinedOutput(); err != nil {
		return "", fmt.Errorf("building relayd: %v: %s", err, out)
	}
	return bin, nil
}

// Selected reports whether name is in the comma-separated list only.
func Selected(only, name string) bool {
	return strings.Contains(","+only+",", ","+name+",")
}
