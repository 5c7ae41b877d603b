package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAPISubscriptionFromNode drives the GraphQL API of a real `jobmill serve` with auth required from
// the npm graphql-ws client: tests/node/subscription.test.mjs starts a synthetic job and follows it to
// the end over a websocket.
func TestAPISubscriptionFromNode(t *testing.T) {
	node, npm := nodeTools(t)
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	nodeDir := filepath.Join(root, "tests", "node")

	dir := t.TempDir()
	dbPath := filepath.Join(dir, "jobmill.db")
	env := baseEnv("JOBMILL_OUTBOX_DIR="+filepath.Join(dir, "outbox"), "JOBMILL_LOG_LEVEL=info")
	token := createToken(t, dir, env, dbPath, "acme")

	// Installing the packages can take a while on a cold cache; do it before the server runs.
	npmCI(t, npm, nodeDir)

	srv := startServe(t, "serve", dir, env, "--sqlite-path", dbPath, "--listen", "127.0.0.1:0", "--auth", "required")
	base := "http://" + srv.addr(t)
	waitForReadyz(t, base)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "subscription.test.mjs")
	cmd.Dir = nodeDir
	cmd.Env = baseEnv("JOBMILL_URL="+base, "JOBMILL_TOKEN="+token)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node subscription.test.mjs: %v\n%s", err, out)
	}
	t.Logf("node subscription.test.mjs:\n%s", strings.TrimRight(string(out), "\n"))
}

// TestGraphiQLServed: the real binary serves GraphiQL at /graphiql/ with every asset from itself.
func TestGraphiQLServed(t *testing.T) {
	dir := t.TempDir()
	env := baseEnv("JOBMILL_OUTBOX_DIR="+filepath.Join(dir, "outbox"), "JOBMILL_LOG_LEVEL=info")
	srv := startServe(t, "serve", dir, env, "--sqlite-path", filepath.Join(dir, "jobmill.db"), "--listen", "127.0.0.1:0", "--auth", "required")
	base := "http://" + srv.addr(t)
	waitForReadyz(t, base)

	noRedirect := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, _ := getBody(t, noRedirect, base+"/graphiql")
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/graphiql/" {
		t.Errorf("GET /graphiql = %d Location %q, want 301 to /graphiql/", resp.StatusCode, resp.Header.Get("Location"))
	}

	client := &http.Client{Timeout: 30 * time.Second}
	resp, body := getBody(t, client, base+"/graphiql/")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /graphiql/ = %d %q, want 200 text/html\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	page := string(body)
	if !strings.Contains(page, `data-endpoint="/query"`) {
		t.Errorf("the GraphiQL page does not point at /query:\n%s", page)
	}

	refs := map[string]string{} // URL as written in the page -> expected content type
	for _, m := range regexp.MustCompile(`<script[^>]*\ssrc="([^"]*)"`).FindAllStringSubmatch(page, -1) {
		refs[m[1]] = "text/javascript"
	}
	for _, m := range regexp.MustCompile(`<link[^>]*\shref="([^"]*)"`).FindAllStringSubmatch(page, -1) {
		refs[m[1]] = "text/css"
	}
	if len(refs) < 4 {
		t.Fatalf("the GraphiQL page references only %v, want React, ReactDOM, GraphiQL and its stylesheet", refs)
	}
	pageURL, _ := url.Parse(base + "/graphiql/")
	for ref, wantType := range refs {
		if strings.Contains(ref, "://") || strings.HasPrefix(ref, "//") {
			t.Errorf("the GraphiQL page loads %q from elsewhere; every asset must come from the binary", ref)
			continue
		}
		u, err := pageURL.Parse(ref)
		if err != nil {
			t.Errorf("asset URL %q: %v", ref, err)
			continue
		}
		resp, body := getBody(t, client, u.String())
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", u.Path, resp.StatusCode)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, wantType) {
			t.Errorf("GET %s: Content-Type %q, want %s", u.Path, ct, wantType)
		}
		if len(body) == 0 {
			t.Errorf("GET %s: empty body", u.Path)
		}
	}
}

// nodeTools finds node and npm. Without them the test is skipped on a developer's machine and fails in
// CI (CI=true), where they must be installed.
func nodeTools(t *testing.T) (node, npm string) {
	t.Helper()
	var missing []string
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node")
	}
	npm, err = exec.LookPath("npm")
	if err != nil {
		missing = append(missing, "npm")
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("%s not found on PATH: the GraphQL subscription test runs tests/node with Node.js 20 or later", strings.Join(missing, " and "))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return node, npm
}

// npmCI installs tests/node's locked packages unless node_modules is already up to date with the lock
// file (npm writes node_modules/.package-lock.json on every install).
func npmCI(t *testing.T, npm, dir string) {
	t.Helper()
	if installedFresh(dir) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	cmd.Env = baseEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
}

func installedFresh(dir string) bool {
	installed, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json"))
	if err != nil {
		return false
	}
	for _, f := range []string{"package-lock.json", "package.json"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.ModTime().After(installed.ModTime()) {
			return false
		}
	}
	return true
}

// createToken runs `jobmill token create` and returns the token it prints.
func createToken(t *testing.T, dir string, env []string, dbPath, tenant string) string {
	t.Helper()
	res := runCLI(t, dir, env, "token", "create", "--tenant", tenant, "--sqlite-path", dbPath)
	if res.code != 0 {
		t.Fatalf("jobmill token create --tenant %s exited %d\nstdout:\n%s\nstderr:\n%s", tenant, res.code, res.stdout, res.stderr)
	}
	token := strings.TrimSpace(res.stdout)
	if !strings.HasPrefix(token, "jm_") || strings.ContainsAny(token, " \n") {
		t.Fatalf("jobmill token create printed %q, want one token (jm_…)", res.stdout)
	}
	return token
}

// waitForReadyz polls /readyz until it answers 200 (the deadline only guards against hanging).
func waitForReadyz(t *testing.T, base string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s/readyz did not answer 200 within a minute: %v", base, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func getBody(t *testing.T, client *http.Client, rawURL string) (*http.Response, []byte) {
	t.Helper()
	resp, err := client.Get(rawURL)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read GET %s: %v", rawURL, err)
	}
	return resp, body
}
