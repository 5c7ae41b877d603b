package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/jobmill/jobmill/app/access"
	"github.com/jobmill/jobmill/config"
)

// localConfig is the configuration the commands of a test use: SQLite in a temporary folder.
func localConfig(t *testing.T, dir string) config.Config {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	for name, value := range map[string]string{
		"sqlite-path": filepath.Join(dir, "jobmill.db"),
		"outbox-dir":  filepath.Join(dir, "outbox"),
		"listen":      "127.0.0.1:0",
		"log-level":   "warn",
	} {
		if err := fs.Set(name, value); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load("", fs)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestTokenCreate(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "jobmill.db")
	out, errOut, err := runCLI(t, "token", "create", "--tenant", "acme", "--name", "ci", "--sqlite-path", db, "--outbox-dir", filepath.Join(dir, "outbox"))
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, errOut)
	}
	token := strings.TrimSuffix(out, "\n")
	if !strings.HasPrefix(token, access.TokenPrefix) || strings.ContainsAny(token, " \n") {
		t.Fatalf("stdout = %q, want the token alone", out)
	}
	if !strings.Contains(errOut, "cannot be shown again") || !strings.Contains(errOut, "tenant acme") || strings.Contains(errOut, token) {
		t.Errorf("stderr = %q", errOut)
	}

	svc, err := openService(t.Context(), localConfig(t, dir), newLogger(localConfig(t, dir)))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	p, err := svc.App.Tokens.Authenticate(t.Context(), token)
	if err != nil || p.Tenant != "acme" {
		t.Fatalf("authenticate the new token: %+v, %v", p, err)
	}
}

func TestTokenCreateRefusesBadTenant(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	_, _, err := runCLI(t, "token", "create", "--tenant", "no spaces", "--sqlite-path", filepath.Join(dir, "jobmill.db"))
	if err == nil || !strings.Contains(err.Error(), "invalid tenant name") {
		t.Fatalf("err = %v", err)
	}
	if _, _, err := runCLI(t, "token", "create"); err == nil || !strings.Contains(err.Error(), `"tenant" not set`) {
		t.Fatalf("no tenant: %v", err)
	}
}

// TestLocalCommands checks that without --server the commands still work on the configured store.
func TestLocalCommands(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	flags := []string{"--sqlite-path", filepath.Join(dir, "jobmill.db"), "--outbox-dir", filepath.Join(dir, "outbox"), "--log-level", "warn"}

	out, errOut, err := runCLI(t, append([]string{"submit", "--type", "synthetic", "--input", `{"subjobs":3}`}, flags...)...)
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, errOut)
	}
	id := strings.TrimSpace(out)

	out, _, err = runCLI(t, append([]string{"status", id, "--json"}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.ID != id || st.State != "PENDING" || st.Tenant != "default" {
		t.Fatalf("status = %+v, %v", st, err)
	}

	// The engine runs the job while watch follows it in the store.
	ctx, cancel := context.WithCancel(t.Context())
	_, wait, err := startService(ctx, localConfig(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = wait()
	}()
	out, _, err = runCLI(t, append([]string{"watch", id}, flags...)...)
	if err != nil {
		t.Fatalf("watch: %v\n%s", err, out)
	}
	if !strings.Contains(out, "job "+id+": COMPLETED, 3/3 sub-jobs done\n") || !strings.Contains(out, "tenant default): COMPLETED\n") {
		t.Errorf("watch:\n%s", out)
	}

	_, _, err = runCLI(t, append([]string{"watch", "nope"}, flags...)...)
	if err == nil || !strings.Contains(err.Error(), "no job nope in ") {
		t.Errorf("watch unknown job: %v", err)
	}
	_, _, err = runCLI(t, append([]string{"cancel", id}, flags...)...)
	if err == nil {
		t.Error("cancelling a completed job succeeded")
	}
}
