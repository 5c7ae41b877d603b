package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/jobmill/jobmill/app"
	"github.com/jobmill/jobmill/graph"
	"github.com/jobmill/jobmill/jobtypes/synthetic"
)

func TestHTTPWithoutAValidTokenIs401(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		name, authorization, challenge string
	}{
		{"no token", "", `Bearer realm="jobmill"`},
		{"unknown token", "Bearer jm_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", `Bearer realm="jobmill", error="invalid_token"`},
		{"not a token", "Bearer hello", `Bearer realm="jobmill", error="invalid_token"`},
		{"other scheme", "Basic " + f.tokens[acme], `Bearer realm="jobmill"`},
	} {
		for _, method := range []string{http.MethodPost, http.MethodGet} {
			var req *http.Request
			if method == http.MethodGet {
				req, _ = http.NewRequest(method, f.endpoint+"?query="+url.QueryEscape("{ jobTypes { name } }"), nil)
			} else {
				req, _ = http.NewRequest(method, f.endpoint, strings.NewReader(`{"query":"{ jobTypes { name } }"}`))
				req.Header.Set("Content-Type", "application/json")
			}
			if c.authorization != "" {
				req.Header.Set("Authorization", c.authorization)
			}
			resp, out := f.send(req)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s: status %d", c.name, method, resp.StatusCode)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != c.challenge {
				t.Errorf("%s %s: WWW-Authenticate %q, want %q", c.name, method, got, c.challenge)
			}
			if len(out.Errors) != 1 || out.Errors[0].Extensions["code"] != "UNAUTHENTICATED" || string(out.Data) != "null" {
				t.Errorf("%s %s: body %+v", c.name, method, out)
			}
		}
	}
	// Server-sent events are HTTP too.
	req, _ := http.NewRequest(http.MethodPost, f.endpoint, strings.NewReader(`{"query":"subscription { jobsChanged { id } }"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if resp, _ := f.send(req); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("SSE without a token: status %d", resp.StatusCode)
	}
	// And a valid token passes, over GET as well.
	req, _ = http.NewRequest(http.MethodGet, f.endpoint+"?query="+url.QueryEscape("{ jobTypes { name } }"), nil)
	req.Header.Set("Authorization", "bearer "+f.tokens[acme])
	if resp, out := f.send(req); resp.StatusCode != http.StatusOK || len(out.Errors) > 0 {
		t.Errorf("GET with a token: %d %+v", resp.StatusCode, out.Errors)
	}
}

func TestGETCannotMutate(t *testing.T) {
	f := newFixture(t)
	q := url.QueryEscape(`mutation { startJob(input: {type: "synthetic"}) { job { id } } }`)
	req, _ := http.NewRequest(http.MethodGet, f.endpoint+"?query="+q, nil)
	req.Header.Set("Authorization", "Bearer "+f.tokens[acme])
	resp, out := f.send(req)
	if resp.StatusCode == http.StatusOK || len(out.Errors) == 0 || f.countJobs("") != 0 {
		t.Errorf("mutation over GET: status %d, errors %+v, jobs %d", resp.StatusCode, out.Errors, f.countJobs(""))
	}
}

func TestWebsocketAuthentication(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	token := f.tokens[acme]

	rejected := []struct {
		name    string
		header  http.Header
		payload map[string]any
		reason  string
	}{
		{"nothing", nil, nil, "missing API token"},
		{"empty payload", nil, map[string]any{}, "missing API token"},
		{"unknown token", nil, map[string]any{"Authorization": "Bearer jm_nope"}, "invalid API token"},
		{"token of the wrong form", nil, map[string]any{"token": "hello"}, "invalid API token"},
		{"bad header", http.Header{"Authorization": {"Bearer jm_nope"}}, nil, "invalid API token"},
	}
	for _, c := range rejected {
		ws, _, err := f.dialWS(c.header)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		ws.send(wsMessage{Type: "connection_init", Payload: mustJSON(t, c.payload)})
		code, reason := ws.closeStatus()
		if code != 4401 || reason != c.reason {
			t.Errorf("%s: closed with %d %q, want 4401 %q", c.name, code, reason, c.reason)
		}
	}

	accepted := []struct {
		name    string
		header  http.Header
		payload map[string]any
	}{
		{"Authorization", nil, map[string]any{"Authorization": "Bearer " + token}},
		{"authorization", nil, map[string]any{"authorization": "Bearer " + token}},
		{"token", nil, map[string]any{"token": token}},
		{"handshake header", http.Header{"Authorization": {"Bearer " + token}}, nil},
		{"payload over header", http.Header{"Authorization": {"Bearer " + f.tokens[globex]}}, map[string]any{"token": token}},
	}
	for _, c := range accepted {
		ws, _, err := f.dialWS(c.header)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		ws.send(wsMessage{Type: "connection_init", Payload: mustJSON(t, c.payload)})
		if m := ws.read(); m.Type != "connection_ack" {
			t.Fatalf("%s: %+v", c.name, m)
		}
		// The connection acts for acme: acme's job is visible.
		ws.subscribe("1", jobEventsSub, map[string]any{"job": id})
		expectEvent(t, ws, "1", new(int64), "SNAPSHOT", "PENDING", 0)
		ws.close()
	}
}

func TestWebsocketPrefersGraphqlTransportWS(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, f.wsURL(), &websocket.DialOptions{Subprotocols: []string{"graphql-ws", "graphql-transport-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if p := conn.Subprotocol(); p != "graphql-transport-ws" {
		t.Errorf("negotiated %q", p)
	}
}

func TestWebsocketOriginCheck(t *testing.T) {
	dial := func(f *fixture, origin string) (*http.Response, error) {
		ws, resp, err := f.dialWS(http.Header{"Origin": {origin}})
		if err == nil {
			ws.close()
		}
		return resp, err
	}
	f := newFixture(t)
	resp, err := dial(f, "https://evil.example")
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("foreign origin: %v, %v", resp, err)
	}
	if _, err := dial(f, f.srv.URL); err != nil {
		t.Errorf("same origin: %v", err)
	}

	allowed := newFixture(t, func(c *graph.Config) { c.AllowedOrigins = []string{"app.example"} })
	if _, err := dial(allowed, "https://app.example"); err != nil {
		t.Errorf("allowed origin: %v", err)
	}
	if resp, err := dial(allowed, "https://evil.example"); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("foreign origin with a list: %v", err)
	}
}

func TestInvalidEnumsAreRejected(t *testing.T) {
	f := newFixture(t)
	resp, out := f.gql(acme, `{ jobs(filter: {states: [BOGUS]}) { edges { cursor } } }`, nil)
	if resp.StatusCode == http.StatusOK || !errorsMention(out.Errors, "BOGUS") {
		t.Errorf("literal: %d %+v", resp.StatusCode, out.Errors)
	}
	errs := f.gqlErrors(acme, jobsQuery, map[string]any{"filter": map[string]any{"states": []string{"BOGUS"}}})
	if !errorsMention(errs, "BOGUS") {
		t.Errorf("variable: %+v", errs)
	}
	errs = f.gqlErrors(acme, subjobsQuery, map[string]any{"job": "x", "state": "DONE"})
	if !errorsMention(errs, "DONE") {
		t.Errorf("sub-job state: %+v", errs)
	}
}

func TestCostlyAndDeepQueriesAreRejected(t *testing.T) {
	f := newFixture(t)
	f.submit(acme, synthetic.Name)

	// 1 + 500 × (edges 1 + node 1 + 20 fields) > 10,000.
	costly := `{ jobs(first: 500) { edges { node { id type state progress seq error createdAt updatedAt endedAt deadline
		counts { total succeeded failed inFlight retries timedOut duplicates late } } } } }`
	errs := f.gqlErrors(acme, costly, nil)
	if !errorsMention(errs, "exceeds the limit of 10000") || errs[0].Extensions["code"] != "COMPLEXITY_LIMIT_EXCEEDED" {
		t.Errorf("costly: %+v", errs)
	}
	// Each page is affordable, together they are not.
	var aliases strings.Builder
	aliases.WriteString("{")
	for i := range 10 { // 10 × (1 + 500 × (1 + 1 + 2)) > 10,000; the alias-count limit is 10
		aliases.WriteString(" a" + strconv.Itoa(i) + `: subjobs(jobId: "x", first: 500) { edges { node { index state } } }`)
	}
	aliases.WriteString(" }")
	if errs := f.gqlErrors(acme, aliases.String(), nil); !errorsMention(errs, "exceeds the limit") {
		t.Errorf("aliases: %+v", errs)
	}
	nested := func(n int) string { return strings.Repeat("ofType { ", n) + "name" + strings.Repeat(" }", n) }
	deep := `{ __type(name: "Job") { ` + nested(600) + " } }"
	if errs := f.gqlErrors(acme, deep, nil); !errorsMention(errs, "at most 500 fields") {
		t.Errorf("deep: %.200v", errs)
	}
	deeper := `{ __type(name: "Job") { ` + nested(1500) + " } }"
	if errs := f.gqlErrors(acme, deeper, nil); !errorsMention(errs, "maximum nesting depth") {
		t.Errorf("deeper: %.200v", errs)
	}
	// Subscriptions are priced too.
	small := newFixture(t, func(c *graph.Config) { c.ComplexityLimit = 5 })
	c := small.connect(acme)
	sub := `subscription { jobsChanged { id type state progress seq createdAt } }`
	if errs := subscriptionErrors(t, c, "1", sub, nil); !errorsMention(errs, "exceeds the limit of 5") {
		t.Errorf("subscription: %+v", errs)
	}

	// An ordinary page passes.
	var out struct{ Jobs jobConnection }
	f.data(acme, `{ jobs(first: 50) { edges { cursor node { id type state progress createdAt } } pageInfo { hasNextPage endCursor } } }`, nil, &out)
	if len(out.Jobs.Edges) != 1 {
		t.Errorf("ordinary page: %+v", out)
	}
}

func TestQueriesWithTooManyTokensAreRejected(t *testing.T) {
	f := newFixture(t)
	q := "{ jobTypes { " + strings.Repeat("name ", 20_000) + "} }"
	errs := f.gqlErrors(acme, q, nil)
	if !errorsMention(errs, "token limit") {
		t.Errorf("errors: %.300v", errs)
	}
}

func TestQueriesThatAreCostlyToValidateAreRejectedQuickly(t *testing.T) {
	f := newFixture(t)
	// Each of these costs seconds of CPU (or never finishes) in validation or the complexity
	// calculation when it is let through.
	var laughs strings.Builder
	laughs.WriteString(`{ __type(name: "Job") { ...F0 } }`)
	for i := range 40 {
		laughs.WriteString(" fragment F" + strconv.Itoa(i) + " on __Type { ofType { ...F" + strconv.Itoa(i+1) + " } a: ofType { ...F" + strconv.Itoa(i+1) + " } }")
	}
	laughs.WriteString(" fragment F40 on __Type { name }")
	var spreads strings.Builder
	spreads.WriteString("{ jobTypes { ")
	for i := range 60 {
		spreads.WriteString("...F" + strconv.Itoa(i) + " ")
	}
	spreads.WriteString("} }")
	for i := range 60 {
		spreads.WriteString(" fragment F" + strconv.Itoa(i) + " on JobType { name }")
	}
	for _, c := range []struct{ name, query, message string }{
		{"one field repeated", "{ jobTypes { " + strings.Repeat("name ", 3000) + "} }", `"name" is selected more than 10 times`},
		{"many fields", "{ jobTypes { " + manyAliases(600) + "} }", "at most 500 fields"},
		{"fragments doubling", laughs.String(), "more than 5000 fields once its fragments are expanded"},
		{"many spreads", spreads.String(), "at most 50 fragments"},
	} {
		errs := f.gqlErrors(acme, c.query, nil)
		if !errorsMention(errs, c.message) || errs[0].Extensions["code"] != "QUERY_SHAPE_LIMIT_EXCEEDED" {
			t.Errorf("%s: %.300v", c.name, errs)
		}
	}
}

func TestIntrospectionPassesTheLimits(t *testing.T) {
	f := newFixture(t)
	var out struct {
		Schema struct {
			QueryType struct{ Name string }
			Types     []struct{ Name string }
		} `json:"__schema"`
	}
	f.data(acme, introspectionQuery, nil, &out)
	names := map[string]bool{}
	for _, ty := range out.Schema.Types {
		names[ty.Name] = true
	}
	if out.Schema.QueryType.Name != "Query" || !names["JobConnection"] || !names["UserError"] {
		t.Errorf("introspection: query type %q, %d types", out.Schema.QueryType.Name, len(out.Schema.Types))
	}
}

func TestOversizedBodiesAre413(t *testing.T) {
	f := newFixture(t, func(c *graph.Config) { c.MaxBodyBytes = 2048 })
	big := `{"query":"{ jobTypes { name } }","variables":{"pad":"` + strings.Repeat("x", 4096) + `"}}`
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(big)
		if chunked {
			body = io.MultiReader(strings.NewReader(big)) // no length: sent chunked
		}
		req, _ := http.NewRequest(http.MethodPost, f.endpoint, body)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+f.tokens[acme])
		resp, out := f.send(req)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || len(out.Errors) != 1 ||
			out.Errors[0].Extensions["code"] != "REQUEST_TOO_LARGE" || !strings.Contains(out.Errors[0].Message, "2048") {
			t.Errorf("chunked %v: %d %+v", chunked, resp.StatusCode, out)
		}
	}
	// A body within the limit passes.
	var types struct{ JobTypes []struct{ Name string } }
	f.data(acme, `{ jobTypes { name } }`, nil, &types)
	if len(types.JobTypes) != 2 {
		t.Errorf("small body: %+v", types)
	}
}

func TestOversizedWebsocketMessagesCloseTheConnection(t *testing.T) {
	f := newFixture(t, func(c *graph.Config) { c.MaxMessageBytes = 1024 })
	id := f.submit(acme, synthetic.Name)
	c := f.connect(acme)
	// A message within the limit works.
	c.subscribe("small", jobEventsSub, map[string]any{"job": id})
	expectEvent(t, c, "small", new(int64), "SNAPSHOT", "PENDING", 0)
	c.subscribe("big", `subscription { jobsChanged { id } } # `+strings.Repeat("x", 4096), nil)
	code, _ := c.closeStatus()
	if code != websocket.StatusMessageTooBig {
		t.Errorf("close code %d, want %d", code, websocket.StatusMessageTooBig)
	}
}

func TestRateLimitPerToken(t *testing.T) {
	f := newFixture(t, func(c *graph.Config) { c.RateLimit, c.RateBurst = 0.01, 2 })
	q := `{ jobTypes { name } }`
	for i := range 2 {
		if resp, out := f.gql(acme, q, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %+v", i, resp.StatusCode, out.Errors)
		}
	}
	resp, out := f.gql(acme, q, nil)
	if resp.StatusCode != http.StatusTooManyRequests || len(out.Errors) != 1 || out.Errors[0].Extensions["code"] != "RATE_LIMITED" {
		t.Fatalf("over the limit: %d %+v", resp.StatusCode, out)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	// Another token has its own budget.
	if resp, _ := f.gql(globex, q, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("another tenant: %d", resp.StatusCode)
	}
}

func TestRateLimitPerAddressWithoutAuthentication(t *testing.T) {
	f := newFixture(t, func(c *graph.Config) { c.AuthRequired, c.RateLimit, c.RateBurst = false, 0.01, 2 })
	codes := make([]int, 3)
	for i := range codes {
		resp, _ := f.gql("", `{ jobTypes { name } }`, nil)
		codes[i] = resp.StatusCode
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != http.StatusTooManyRequests {
		t.Errorf("status codes %v", codes)
	}
}

func TestRateLimitOnWebsocketOperations(t *testing.T) {
	f := newFixture(t, func(c *graph.Config) { c.RateLimit, c.RateBurst = 0.01, 2 })
	id := f.submit(acme, synthetic.Name)
	c := f.connect(acme)
	for _, sub := range []string{"1", "2"} {
		c.subscribe(sub, jobEventsSub, map[string]any{"job": id})
		expectEvent(t, c, sub, new(int64), "SNAPSHOT", "PENDING", 0)
	}
	errs := subscriptionErrors(t, c, "3", jobEventsSub, map[string]any{"job": id})
	if !errorsMention(errs, "rate limit exceeded") || errs[0].Extensions["code"] != "RATE_LIMITED" {
		t.Errorf("third operation: %+v", errs)
	}
}

func TestInternalErrorsAreLoggedNotShown(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`{ jobs { edges { node { id } } } }`,
		`{ job(id: "` + id + `") { id } }`,
		`mutation { startJob(input: {type: "synthetic"}) { job { id } userErrors { code } } }`,
		`mutation { cancelJob(input: {jobId: "` + id + `"}) { job { id } userErrors { code } } }`,
	} {
		resp, out := f.gql(acme, q, nil)
		raw, _ := json.Marshal(out)
		if len(out.Errors) != 1 || out.Errors[0].Message != "internal server error" || out.Errors[0].Extensions["code"] != "INTERNAL_SERVER_ERROR" {
			t.Errorf("%s: %d %s", q, resp.StatusCode, raw)
		}
		if bytes.Contains(bytes.ToLower(raw), []byte("sql")) || bytes.Contains(bytes.ToLower(raw), []byte("database")) {
			t.Errorf("%s: response shows internals: %s", q, raw)
		}
	}
	if logs := f.logs.String(); !strings.Contains(logs, "graphql: internal error") || !strings.Contains(logs, "closed") {
		t.Errorf("the real error is not logged:\n%s", logs)
	}
}

func TestNewHandlerRejectsBadLimits(t *testing.T) {
	for _, cfg := range []graph.Config{
		{App: app.Application{}, RateLimit: -1},
		{RateBurst: -1},
		{MaxBodyBytes: -5},
		{ComplexityLimit: -1},
	} {
		if _, err := graph.NewHandler(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// introspectionQuery is the query GraphiQL sends.
const introspectionQuery = `query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description
    args { ...InputValue }
    type { ...TypeRef }
    isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}`

func manyAliases(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("a" + strconv.Itoa(i) + ": name ")
	}
	return b.String()
}
