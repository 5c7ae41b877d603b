// Package e2e drives the real jobmill binary: it builds cmd/jobmill once, then runs serve, submit,
// status and demo as separate processes against SQLite files in temporary directories, kills serve with
// SIGKILL in the middle of a job and checks that the job still ends exactly once with every effect
// produced exactly once.
package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// binary is the jobmill executable TestMain builds.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "jobmill-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "jobmill")
	build := exec.Command("go", "build", "-o", binary, "./cmd/jobmill")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/jobmill in %s: %v\n%s", root, err, out)
		return 1
	}
	return m.Run()
}

// moduleRoot is the directory of the go.mod this package belongs to.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod), nil
		}
	}
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(abs, "go.mod")); err != nil {
		return "", fmt.Errorf("cannot find the module root (go env GOMOD failed and ../../go.mod is missing): %w", err)
	}
	return abs, nil
}

// baseEnv is this process's environment without JOBMILL_* variables, so a developer's settings cannot
// change what the binary under test does, plus extra.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "JOBMILL_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// result of one finished CLI process.
type result struct {
	stdout, stderr string
	code           int
}

// runCLI runs the binary to completion (at most two minutes, a guard against hangs only).
func runCLI(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	default:
		t.Fatalf("run jobmill %s: %v\nstderr:\n%s", strings.Join(args, " "), err, res.stderr)
	}
	if ctx.Err() != nil {
		t.Fatalf("jobmill %s did not finish within 2 minutes\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), res.stdout, res.stderr)
	}
	return res
}

// syncBuffer is an io.Writer safe to read while exec's copying goroutine writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// serveProc is one running `jobmill serve`.
type serveProc struct {
	name   string
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error // Wait's result, set before done closes
}

var listenLine = regexp.MustCompile(`msg="jobmill running" listen=(\S+)`)

// startServe starts `jobmill serve` with args and dumps the tail of its stderr if the test fails.
func startServe(t *testing.T, name, dir string, env []string, args ...string) *serveProc {
	t.Helper()
	p := &serveProc{name: name, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, append([]string{"serve"}, args...)...)
	p.cmd.Dir = dir
	p.cmd.Env = env
	p.cmd.Stdout = p.stderr
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- tail of %s output (pid %d, %v) ---\n%s", p.name, p.cmd.Process.Pid, p.err, tail(p.stderr.String(), 40))
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *serveProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *serveProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil && !p.exited() {
		t.Fatalf("SIGKILL %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Fatalf("%s still running a minute after SIGKILL", p.name)
	}
}

// terminate sends SIGTERM and requires a clean exit (code 0) within a generous deadline.
func (p *serveProc) terminate(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v (exited already: %v, %v)", p.name, err, p.exited(), p.err)
	}
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not exit within a minute of SIGTERM\n%s", p.name, tail(p.stderr.String(), 40))
	}
	if p.err != nil {
		t.Fatalf("%s did not exit cleanly after SIGTERM: %v\n%s", p.name, p.err, tail(p.stderr.String(), 40))
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("%s exited with code %d after SIGTERM, want 0", p.name, code)
	}
}

// addr waits for the "jobmill running" log line and returns the address it names.
func (p *serveProc) addr(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if m := listenLine.FindStringSubmatch(p.stderr.String()); m != nil {
			return m[1]
		}
		if p.exited() {
			t.Fatalf("%s exited (%v) before logging \"jobmill running\"\n%s", p.name, p.err, tail(p.stderr.String(), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not log \"jobmill running\" with listen=ADDR within a minute\n%s", p.name, tail(p.stderr.String(), 40))
	return ""
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// status mirrors the JSON `jobmill status --json` prints.
type status struct {
	ID       string  `json:"id"`
	Type     string  `json:"type"`
	State    string  `json:"state"`
	Error    string  `json:"error"`
	Progress float64 `json:"progress"`
	Steps    []struct {
		Step       int        `json:"step"`
		StartedAt  *time.Time `json:"started_at"`
		FinishedAt *time.Time `json:"finished_at"`
	} `json:"steps"`
	SubJobs    map[string]int64 `json:"subjobs"`
	Retries    int64            `json:"retries"`
	TimedOut   int64            `json:"timed_out"`
	Duplicates int64            `json:"duplicates_absorbed"`
	Late       int64            `json:"late_ignored"`
	Output     json.RawMessage  `json:"output"`
}

func (s status) terminal() bool {
	return s.State == "COMPLETED" || s.State == "FAILED" || s.State == "CANCELLED"
}

func (s status) String() string {
	return fmt.Sprintf("%s progress=%.3f subjobs=%v retries=%d timed_out=%d duplicates=%d late=%d error=%q",
		s.State, s.Progress, s.SubJobs, s.Retries, s.TimedOut, s.Duplicates, s.Late, s.Error)
}

// jobStatus runs `jobmill status ID --json` as its own process.
func jobStatus(t *testing.T, dir string, env []string, dbPath, id string) status {
	t.Helper()
	res := runCLI(t, dir, env, "status", id, "--json", "--sqlite-path", dbPath)
	if res.code != 0 {
		t.Fatalf("jobmill status %s exited %d\nstderr:\n%s", id, res.code, res.stderr)
	}
	var st status
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
		t.Fatalf("jobmill status --json printed something that is not the status JSON: %v\n%s", err, res.stdout)
	}
	if st.ID != id {
		t.Fatalf("status of job %s reports id %q", id, st.ID)
	}
	return st
}

const (
	customers = 3000
	manager   = "alice"
	minKills  = 5
)

// TestKillDuringStep2 SIGKILLs serve at random moments while an invoices job is in step 2, at least
// five times, then lets a last serve finish the job and checks every effect happened exactly once.
func TestKillDuringStep2(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "jobmill.db")
	outbox := filepath.Join(dir, "outbox")
	env := baseEnv("JOBMILL_OUTBOX_DIR="+outbox, "JOBMILL_LOG_LEVEL=info")
	// 3000 sub-jobs on four workers keep step 2 long enough for five kills with a wide margin (each run
	// moves it a few percent); nothing is slowed artificially.
	serveArgs := []string{"--sqlite-path", dbPath, "--listen", "127.0.0.1:0", "--workers", "4"}

	input := fmt.Sprintf(`{"account_manager":%q,"customers":%d,"period":"2026-11"}`, manager, customers)
	sub := runCLI(t, dir, env, "submit", "--type", "invoices", "--input", input, "--sqlite-path", dbPath)
	if sub.code != 0 {
		t.Fatalf("jobmill submit exited %d\nstderr:\n%s", sub.code, sub.stderr)
	}
	id := strings.TrimSpace(sub.stdout)
	if id == "" || strings.ContainsAny(id, " \n/") {
		t.Fatalf("jobmill submit printed %q, want one job id", sub.stdout)
	}
	t.Logf("submitted job %s", id)

	kills := 0
	lastSucceeded := int64(-1) // sub-jobs succeeded when the previous serve was killed
	for run := 1; kills < minKills; run++ {
		if run > 3*minKills {
			t.Fatalf("only %d kills in step 2 after %d serve runs", kills, run-1)
		}
		srv := startServe(t, fmt.Sprintf("serve run %d", run), dir, env, serveArgs...)

		// Wait until this serve has moved the job forward in step 2: the restarted engine must resume.
		deadline := time.Now().Add(2 * time.Minute)
		var st status
		for {
			st = jobStatus(t, dir, env, dbPath, id)
			if st.State == "STEP2_RUNNING" && st.SubJobs["succeeded"] > 0 && st.SubJobs["succeeded"] > lastSucceeded {
				break
			}
			if st.terminal() || st.State == "STEP3_RUNNING" {
				t.Fatalf("job left step 2 (%s) after only %d kills in step 2, want at least %d: make the job larger or the workers fewer", st, kills, minKills)
			}
			if srv.exited() {
				t.Fatalf("%s exited on its own (%v) while the job was %s", srv.name, srv.err, st)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s made no progress on the job for 2 minutes: %s (succeeded at the last kill: %d)", srv.name, st, lastSucceeded)
			}
			time.Sleep(20 * time.Millisecond)
		}

		time.Sleep(time.Duration(50+rand.IntN(351)) * time.Millisecond)
		srv.kill(t)
		after := jobStatus(t, dir, env, dbPath, id)
		if after.State != "STEP2_RUNNING" {
			t.Fatalf("the job was %s when %s was killed, after %d earlier kills in step 2; want at least %d kills in step 2: make the job larger or the workers fewer",
				after, srv.name, kills, minKills)
		}
		kills++
		lastSucceeded = after.SubJobs["succeeded"]
		t.Logf("kill %d in step 2: %s", kills, after)
	}

	// Let a last serve finish the job, then stop it the polite way.
	final := startServe(t, "final serve", dir, env, serveArgs...)
	finalStart := time.Now()
	deadline := finalStart.Add(3 * time.Minute)
	var st status
	for {
		st = jobStatus(t, dir, env, dbPath, id)
		if st.terminal() {
			break
		}
		if final.exited() {
			t.Fatalf("final serve exited on its own (%v) while the job was %s", final.err, st)
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s did not end within 3 minutes of the last restart: %s", id, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Informational only: sub-jobs claimed by a killed serve come back when their queue lease expires.
	t.Logf("final serve ended the job %s after it started", time.Since(finalStart).Round(100*time.Millisecond))
	final.terminate(t)
	st = jobStatus(t, dir, env, dbPath, id)
	t.Logf("after %d kills in step 2: %s", kills, st)
	t.Logf("duplicates absorbed: %d (retries %d, timed out %d, late reports ignored %d)", st.Duplicates, st.Retries, st.TimedOut, st.Late)

	if st.State != "COMPLETED" {
		t.Fatalf("job ended %s, want COMPLETED", st)
	}
	if got := st.SubJobs["total"]; got != customers {
		t.Errorf("status total = %d, want %d", got, customers)
	}
	if got := st.SubJobs["succeeded"]; got != customers {
		t.Errorf("status succeeded = %d, want %d", got, customers)
	}
	if got := st.SubJobs["failed"]; got != 0 {
		t.Errorf("status failed = %d, want 0", got)
	}
	if len(st.Steps) != 3 {
		t.Fatalf("status has %d steps, want 3", len(st.Steps))
	}
	for i, s := range st.Steps {
		if s.StartedAt == nil || s.FinishedAt == nil {
			t.Errorf("step %d: started_at=%v finished_at=%v, want both set", i+1, s.StartedAt, s.FinishedAt)
		}
	}

	checkOutbox(t, filepath.Join(outbox, id))
	checkEventLog(t, dbPath, id)
}

var invoiceName = regexp.MustCompile(`^invoice-(.+)\.eml$`)

// checkOutbox requires one complete invoice email per customer and one summary.
func checkOutbox(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	seen := map[string]int{}
	var summaries, others []string
	invoices := 0
	for _, e := range entries {
		name := e.Name()
		m := invoiceName.FindStringSubmatch(name)
		switch {
		case m != nil:
			invoices++
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatalf("read %s: %v", name, err)
			}
			// Count the customer named inside the email, so a file holding the wrong or a truncated
			// invoice does not pass for the customer its name claims.
			text := string(b)
			sm := regexp.MustCompile(`(?m)^Subject: Invoice (\S+) for 2026-11$`).FindStringSubmatch(text)
			if sm == nil || sm[1] != m[1] || !strings.HasSuffix(text, "Your account manager, "+manager+"\n") {
				t.Errorf("%s is not a complete invoice for customer %s:\n%s", name, m[1], text)
				continue
			}
			seen[sm[1]]++
		case strings.HasPrefix(name, "summary-") && strings.HasSuffix(name, ".eml"):
			summaries = append(summaries, name)
		default:
			others = append(others, name)
		}
	}
	if invoices != customers {
		t.Errorf("outbox holds %d invoice-*.eml files, want %d", invoices, customers)
	}
	var missing []string
	for i := 1; i <= customers; i++ {
		cid := fmt.Sprintf("%s-c%06d", manager, i)
		if n := seen[cid]; n != 1 {
			missing = append(missing, fmt.Sprintf("%s×%d", cid, n))
		}
		delete(seen, cid)
	}
	if len(missing) > 0 {
		t.Errorf("%d customers do not have exactly one invoice: %s", len(missing), strings.Join(first(missing, 20), ", "))
	}
	if len(seen) > 0 {
		t.Errorf("invoices for unknown customers: %v", seen)
	}
	if len(others) > 0 {
		t.Logf("other files in the outbox (leftovers of killed writes?): %s", strings.Join(first(others, 20), ", "))
	}
	if !slices.Equal(summaries, []string{"summary-" + manager + ".eml"}) {
		t.Fatalf("summary files = %v, want exactly [summary-%s.eml]", summaries, manager)
	}
	b, err := os.ReadFile(filepath.Join(dir, summaries[0]))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), fmt.Sprintf("Invoices sent:  %d\n", customers)) || !strings.Contains(string(b), "Failed:         0\n") {
		t.Errorf("summary does not report %d invoices sent and none failed:\n%s", customers, b)
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… %d more", len(s)-n))
	}
	return s
}

// checkEventLog reads the event log table directly and requires one Step2Completed and one
// JobCompleted for the job.
func checkEventLog(t *testing.T, dbPath, id string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+dbPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT "offset", payload, metadata FROM "watermill_jobmill.events" ORDER BY "offset"`)
	if err != nil {
		t.Fatalf("read the event log: %v", err)
	}
	defer rows.Close()
	counts := map[string]int{}
	offsets := map[string][]int64{}
	for rows.Next() {
		var (
			offset   int64
			payload  []byte
			metadata sql.NullString
		)
		if err := rows.Scan(&offset, &payload, &metadata); err != nil {
			t.Fatal(err)
		}
		var md struct {
			Name string `json:"name"`
		}
		if metadata.Valid && metadata.String != "" {
			if err := json.Unmarshal([]byte(metadata.String), &md); err != nil {
				t.Fatalf("event %d: metadata is not JSON: %v: %s", offset, err, metadata.String)
			}
		}
		var p struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal(payload, &p); err != nil {
			t.Fatalf("event %d (%s): payload is not JSON: %v", offset, md.Name, err)
		}
		if p.JobID != id {
			continue
		}
		counts[md.Name]++
		offsets[md.Name] = append(offsets[md.Name], offset)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("events of the job by name: %v", counts)
	for _, name := range []string{"Step2Completed", "JobCompleted"} {
		if counts[name] != 1 {
			t.Errorf("event log holds %d %s events for the job (offsets %v), want exactly 1", counts[name], name, offsets[name])
		}
	}
}

// TestServeGracefulShutdown starts serve, probes /healthz and /readyz and stops it with SIGTERM.
func TestServeGracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	env := baseEnv("JOBMILL_OUTBOX_DIR="+filepath.Join(dir, "outbox"), "JOBMILL_LOG_LEVEL=info")
	srv := startServe(t, "serve", dir, env, "--sqlite-path", filepath.Join(dir, "jobmill.db"), "--listen", "127.0.0.1:0")
	addr := srv.addr(t)
	client := &http.Client{Timeout: 10 * time.Second}

	get := func(path string) (int, string, error) {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	code, body, err := get("/healthz")
	if err != nil || code != http.StatusOK || body != "ok\n" {
		t.Fatalf("GET /healthz = %d %q, %v; want 200 \"ok\\n\"", code, body, err)
	}
	// Readiness follows the router starting; poll for it (the deadline only guards against hanging).
	deadline := time.Now().Add(time.Minute)
	for {
		code, body, err = get("/readyz")
		if err == nil && code == http.StatusOK && body == "ready\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /readyz = %d %q, %v for a minute; want 200 \"ready\\n\"", code, body, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	srv.terminate(t)
	if _, _, err := get("/healthz"); err == nil {
		t.Errorf("GET /healthz still answers after serve exited")
	}
}

// TestInvalidConfigExitsNonZero: serve refuses bad configuration with one line naming the key.
func TestInvalidConfigExitsNonZero(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		key  string
	}{
		{name: "workers flag", args: []string{"--workers", "0"}, key: "workers"},
		{name: "tick env", env: []string{"JOBMILL_TICK=banana"}, key: "JOBMILL_TICK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"serve", "--sqlite-path", filepath.Join(dir, "jobmill.db"), "--listen", "127.0.0.1:0"}, tc.args...)
			res := runCLI(t, dir, baseEnv(tc.env...), args...)
			if res.code == 0 {
				t.Fatalf("jobmill %s exited 0, want non-zero\nstderr:\n%s", strings.Join(args, " "), res.stderr)
			}
			lines := strings.Split(strings.TrimRight(res.stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.key) {
				t.Fatalf("stderr = %q, want one line naming %s", res.stderr, tc.key)
			}
			t.Logf("exit %d: %s", res.code, lines[0])
		})
	}
}

// TestDemo runs `jobmill demo` end to end in an empty directory.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	res := runCLI(t, dir, baseEnv(), "demo", "--customers", "200")
	if res.code != 0 {
		t.Fatalf("jobmill demo exited %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stdout, "200 invoice emails") {
		t.Errorf("demo output does not mention \"200 invoice emails\":\n%s", res.stdout)
	}
	m := regexp.MustCompile(`submitted invoices job (\S+)`).FindStringSubmatch(res.stdout)
	if m == nil {
		t.Fatalf("demo output does not name the job it submitted:\n%s", res.stdout)
	}
	outDir := filepath.Join(dir, "jobmill-data", "outbox", m[1])
	entries, err := os.ReadDir(outDir)
	if err != nil {
		t.Fatalf("read the demo's outbox: %v", err)
	}
	n := 0
	for _, e := range entries {
		if invoiceName.MatchString(e.Name()) {
			n++
		}
	}
	if n != 200 {
		t.Errorf("%s holds %d invoice emails, want 200", outDir, n)
	}
}
