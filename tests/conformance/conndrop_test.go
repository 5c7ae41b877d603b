package conformance

import (
	"database/sql"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/config"
)

// Scenario 4: while step 2 runs, the servers drop the engine's connections, twice; the job still completes
// with exact counts.
func testConnectionDropped(t *testing.T, c combo) {
	if !c.uses(config.BackendPostgres) && !c.uses(config.BackendMySQL) && !c.uses(config.BackendAMQP) {
		t.Skip("no server connection to drop in this combination")
	}
	e := newEnv(t, c)
	const n = 3000
	typ := newCounting(t, "conformance-sleepy", 2*time.Millisecond)
	// The last quarter waits for both drops: the job cannot leave step 2 before them however fast it is.
	release := typ.holdFrom(n * 3 / 4)
	defer release()
	en := startEngine(t, e, typ.registry, nil)
	id := en.submit(typ.name, countInput{N: n})

	for round, at := range []int64{n / 5, n / 2} {
		st := en.waitFor(id, "progress in step 2", func(j *job.Job) bool {
			return j.State == job.StateStep2Running && j.Succeeded >= at || j.State.Terminal() || j.State == job.StateStep3Running
		})
		if st.Job.State != job.StateStep2Running {
			t.Fatalf("the job left step 2 before drop %d: %s", round+1, describe(st))
		}
		dropConnections(t, e)
		t.Logf("drop %d at %s", round+1, describe(st))
	}
	release()
	st := en.waitCompleted(id)
	checkCounts(t, st, n)
	if runs := typ.step3Runs(id); runs != 1 {
		t.Errorf("step 3 ran %d times, want 1", runs)
	}
	t.Logf("after the drops: %s", describe(st))
}

// dropConnections closes the engine's server connections on every server the combination uses.
func dropConnections(t *testing.T, e *env) {
	t.Helper()
	if e.combo.uses(config.BackendPostgres) {
		admin, err := sql.Open("pgx", postgresURL)
		if err != nil {
			t.Fatal(err)
		}
		var killed int
		err = admin.QueryRow(`SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = $1) AS k`, e.appName).Scan(&killed)
		admin.Close()
		if err != nil {
			t.Fatalf("terminate PostgreSQL sessions: %v", err)
		}
		if killed == 0 {
			t.Errorf("no PostgreSQL session of the engine (application_name %s) to terminate", e.appName)
		}
		t.Logf("terminated %d PostgreSQL sessions", killed)
	}
	if e.combo.uses(config.BackendMySQL) {
		admin, err := sql.Open("mysql", mysqlDSN)
		if err != nil {
			t.Fatal(err)
		}
		killed := killMySQLSessions(t, admin, e.mysqlDB)
		admin.Close()
		if killed == 0 {
			t.Errorf("no MySQL session of the engine (database %s) to kill", e.mysqlDB)
		}
		t.Logf("killed %d MySQL sessions", killed)
	}
	if e.combo.uses(config.BackendAMQP) {
		if _, err := exec.LookPath("rabbitmqctl"); err != nil {
			t.Logf("rabbitmqctl not found: RabbitMQ connections not dropped")
			return
		}
		if e.vhost == "" {
			t.Logf("no RabbitMQ vhost of our own: closing every connection of the shared broker would hit other users; RabbitMQ connections not dropped")
			return
		}
		out, err := exec.Command("rabbitmqctl", "close_all_connections", "--vhost", e.vhost, "conformance test").CombinedOutput()
		if err != nil {
			t.Logf("rabbitmqctl close_all_connections failed (%v): %s; RabbitMQ connections not dropped", err, strings.TrimSpace(string(out)))
			return
		}
		t.Logf("closed the RabbitMQ connections of vhost %s: %s", e.vhost, strings.TrimSpace(string(out)))
	}
}
