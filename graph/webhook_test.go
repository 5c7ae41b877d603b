package graph_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/notify"
	"github.com/jobmill/jobmill/graph"
	"github.com/jobmill/jobmill/jobtypes/synthetic"
)

const (
	webhookFields  = `id url eventTypes createdAt`
	deliveryFields = `id webhookId eventType jobId step at data state attempts lastError lastStatusCode nextAttemptAt deliveredAt createdAt updatedAt`
)

type webhookView struct {
	ID         string         `json:"id"`
	URL        string         `json:"url"`
	EventTypes []string       `json:"eventTypes"`
	CreatedAt  time.Time      `json:"createdAt"`
	Deliveries []deliveryView `json:"deliveries"`
}

type deliveryView struct {
	ID             string          `json:"id"`
	WebhookID      string          `json:"webhookId"`
	EventType      string          `json:"eventType"`
	JobID          string          `json:"jobId"`
	Step           *int            `json:"step"`
	At             time.Time       `json:"at"`
	Data           json.RawMessage `json:"data"`
	State          string          `json:"state"`
	Attempts       int             `json:"attempts"`
	LastError      *string         `json:"lastError"`
	LastStatusCode *int            `json:"lastStatusCode"`
	NextAttemptAt  *time.Time      `json:"nextAttemptAt"`
	DeliveredAt    *time.Time      `json:"deliveredAt"`
	CreatedAt      time.Time       `json:"createdAt"`
	UpdatedAt      time.Time       `json:"updatedAt"`
}

// webhookPayload holds the fields of the three webhook mutations' payloads.
type webhookPayload struct {
	Webhook          *webhookView  `json:"webhook"`
	Secret           *string       `json:"secret"`
	DeletedWebhookID *string       `json:"deletedWebhookId"`
	Delivery         *deliveryView `json:"delivery"`
	UserErrors       []userError   `json:"userErrors"`
}

func (p webhookPayload) problems() payload { return payload{UserErrors: p.UserErrors} }

const (
	createWebhookMutation = `mutation($input: CreateWebhookInput!) { createWebhook(input: $input) {
		webhook { ` + webhookFields + ` } secret ` + userErrorFields + ` } }`
	deleteWebhookMutation = `mutation($id: ID!) { deleteWebhook(input: {id: $id}) { deletedWebhookId ` + userErrorFields + ` } }`
	redeliverMutation     = `mutation($id: ID!) { redeliverWebhookDelivery(input: {deliveryId: $id}) {
		delivery { ` + deliveryFields + ` } ` + userErrorFields + ` } }`
)

func (f *fixture) createWebhook(tenant, url string, types ...string) webhookPayload {
	f.t.Helper()
	input := map[string]any{"url": url}
	if types != nil {
		input["eventTypes"] = types
	}
	var out struct{ CreateWebhook webhookPayload }
	f.data(tenant, createWebhookMutation, map[string]any{"input": input}, &out)
	return out.CreateWebhook
}

func (f *fixture) deleteWebhook(tenant, id string) webhookPayload {
	f.t.Helper()
	var out struct{ DeleteWebhook webhookPayload }
	f.data(tenant, deleteWebhookMutation, map[string]any{"id": id}, &out)
	return out.DeleteWebhook
}

func (f *fixture) redeliver(tenant, id string) webhookPayload {
	f.t.Helper()
	var out struct{ RedeliverWebhookDelivery webhookPayload }
	f.data(tenant, redeliverMutation, map[string]any{"id": id}, &out)
	return out.RedeliverWebhookDelivery
}

func (f *fixture) webhooks(tenant string) []webhookView {
	f.t.Helper()
	var out struct{ Webhooks []webhookView }
	f.data(tenant, `{ webhooks { `+webhookFields+` deliveries(first: 10) { `+deliveryFields+` } } }`, nil, &out)
	return out.Webhooks
}

func TestCreateWebhookRefusesInvalidURLs(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ name, url, says string }{
		{"empty", "", "required"},
		{"another scheme", "ftp://hooks.example.com/in", "http:// or https://"},
		{"relative", "/hooks/in", "http:// or https://"},
		{"no host", "https:///hooks/in", "no host"},
		{"credentials", "https://user:pw@hooks.example.com/in", "user name or password"},
		{"fragment", "https://hooks.example.com/in#top", "fragment"},
		{"too long", "https://hooks.example.com/" + strings.Repeat("a", notify.MaxURLLength), "longer than"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := f.createWebhook(acme, c.url)
			if p.Webhook != nil || p.Secret != nil {
				t.Errorf("refused webhook came with %+v and a secret: %v", p.Webhook, p.Secret != nil)
			}
			e := oneUserError(t, p.problems(), "InputError", "INVALID_INPUT", "input", "url")
			if !strings.Contains(e.Message, c.says) {
				t.Errorf("message %q does not say %q", e.Message, c.says)
			}
		})
	}
	if hooks := f.webhooks(acme); len(hooks) != 0 {
		t.Errorf("refused URLs were registered: %+v", hooks)
	}
}

func TestCreateWebhookRefusesUnknownEventTypes(t *testing.T) {
	f := newFixture(t)
	// The event types are an enum: a name outside it (including the deliveries' own spelling) is refused
	// before anything runs.
	for _, types := range [][]string{{"JOB_EXPLODED"}, {"job.completed"}, {"JOB_COMPLETED", "jobCompleted"}} {
		errs := f.gqlErrors(acme, createWebhookMutation, map[string]any{"input": map[string]any{
			"url": "https://hooks.example.com/in", "eventTypes": types,
		}})
		if !errorsMention(errs, "WebhookEventType") {
			t.Errorf("%v: errors %+v do not name the enum", types, errs)
		}
	}
	if hooks := f.webhooks(acme); len(hooks) != 0 {
		t.Errorf("webhooks with unknown types were registered: %+v", hooks)
	}
}

func TestWebhookLifecycle(t *testing.T) {
	f := newFixture(t)
	first := f.createWebhook(acme, " https://hooks.example.com/jobs?team=7 ", "JOB_COMPLETED", "STEP_FINISHED", "JOB_COMPLETED")
	if len(first.UserErrors) != 0 || first.Webhook == nil {
		t.Fatalf("createWebhook = %+v", first)
	}
	w := first.Webhook
	if w.ID == "" || w.URL != "https://hooks.example.com/jobs?team=7" || !slices.Equal(w.EventTypes, []string{"JOB_COMPLETED", "STEP_FINISHED"}) || w.CreatedAt.IsZero() {
		t.Errorf("webhook = %+v", w)
	}
	if first.Secret == nil || !strings.HasPrefix(*first.Secret, notify.SecretPrefix) || len(*first.Secret) < len(notify.SecretPrefix)+40 {
		t.Errorf("secret = %v", first.Secret)
	}
	second := f.createWebhook(acme, "http://10.0.0.7:8080/in")
	if len(second.UserErrors) != 0 || second.Webhook == nil || len(second.Webhook.EventTypes) != 0 {
		t.Fatalf("createWebhook for every type = %+v", second)
	}
	if *second.Secret == *first.Secret {
		t.Error("two webhooks share a secret")
	}

	listed := f.webhooks(acme)
	if len(listed) != 2 || listed[0].ID != w.ID || listed[1].ID != second.Webhook.ID {
		t.Fatalf("webhooks = %+v, want oldest first", listed)
	}
	if l := listed[0]; l.URL != w.URL || !slices.Equal(l.EventTypes, w.EventTypes) || !l.CreatedAt.Equal(w.CreatedAt) || len(l.Deliveries) != 0 {
		t.Errorf("listed %+v, created %+v", l, w)
	}

	var one struct{ Webhook *webhookView }
	f.data(acme, `query($id: ID!) { webhook(id: $id) { `+webhookFields+` deliveries(first: 500) { `+deliveryFields+` } } }`, map[string]any{"id": w.ID}, &one)
	if one.Webhook == nil || one.Webhook.ID != w.ID || one.Webhook.URL != w.URL {
		t.Errorf("webhook(id) = %+v", one.Webhook)
	}

	// Another tenant neither sees nor deletes them: its answer is the one for an id that does not exist.
	if hooks := f.webhooks(globex); len(hooks) != 0 {
		t.Errorf("globex sees %+v", hooks)
	}
	for _, c := range []struct{ tenant, id string }{{globex, w.ID}, {acme, "no-such-webhook"}, {acme, strings.Repeat("x", 10_000)}} {
		_, out := f.gql(c.tenant, `query($id: ID!) { webhook(id: $id) { id url } }`, map[string]any{"id": c.id})
		if len(out.Errors) > 0 || string(out.Data) != `{"webhook":null}` {
			t.Errorf("webhook %.20s as %s: %s %+v", c.id, c.tenant, out.Data, out.Errors)
		}
	}
	p := f.deleteWebhook(globex, w.ID)
	oneUserError(t, p.problems(), "InputError", "NOT_FOUND", "input", "id")
	if p.DeletedWebhookID != nil {
		t.Errorf("globex deleted %s", *p.DeletedWebhookID)
	}
	if hooks := f.webhooks(acme); len(hooks) != 2 {
		t.Fatalf("after globex's attempt acme has %d webhooks", len(hooks))
	}

	p = f.deleteWebhook(acme, w.ID)
	if len(p.UserErrors) != 0 || p.DeletedWebhookID == nil || *p.DeletedWebhookID != w.ID {
		t.Fatalf("deleteWebhook = %+v", p)
	}
	if hooks := f.webhooks(acme); len(hooks) != 1 || hooks[0].ID != second.Webhook.ID {
		t.Errorf("after deleting %s: %+v", w.ID, hooks)
	}
	for _, id := range []string{w.ID, "no-such-webhook", strings.Repeat("x", 10_000)} {
		oneUserError(t, f.deleteWebhook(acme, id).problems(), "InputError", "NOT_FOUND", "input", "id")
	}
}

func TestWebhookSecretIsReturnedOnlyOnCreation(t *testing.T) {
	f := newFixture(t)
	created := f.createWebhook(acme, "https://hooks.example.com/in")
	if created.Secret == nil {
		t.Fatalf("createWebhook = %+v", created)
	}
	secret := *created.Secret
	id := f.submit(acme, synthetic.Name)
	f.check(f.notifier.Apply(context.Background(), "event-1", job.JobStarted{JobID: id, Tenant: acme, Type: synthetic.Name, Seq: 1, At: f.now()}))

	// The secret is the webhook's signing key...
	claims, err := f.hooks.ClaimDeliveries(context.Background(), f.now(), time.Minute, 10)
	if err != nil || len(claims) == 0 {
		t.Fatalf("claim deliveries: %d, %v", len(claims), err)
	}
	if string(claims[0].Target.Secret) != secret {
		t.Error("the deliveries are signed with another key than createWebhook returned")
	}
	// ...and no query shows it again: no field of a webhook or a delivery holds it.
	for _, typ := range []string{"Webhook", "WebhookDelivery"} {
		var out struct {
			Type struct{ Fields []struct{ Name string } } `json:"__type"`
		}
		f.data(acme, `query($t: String!) { __type(name: $t) { fields { name } } }`, map[string]any{"t": typ}, &out)
		if len(out.Type.Fields) == 0 {
			t.Fatalf("%s has no fields", typ)
		}
		for _, fld := range out.Type.Fields {
			if strings.Contains(strings.ToLower(fld.Name), "secret") {
				t.Errorf("%s.%s", typ, fld.Name)
			}
		}
	}
	_, out := f.gql(acme, `{ webhooks { `+webhookFields+` deliveries(first: 10) { `+deliveryFields+` } } }`, nil)
	if len(out.Errors) > 0 || !strings.Contains(string(out.Data), created.Webhook.ID) || !strings.Contains(string(out.Data), "JOB_STARTED") {
		t.Fatalf("webhooks: %s %+v", out.Data, out.Errors)
	}
	key := strings.TrimPrefix(secret, notify.SecretPrefix)
	if strings.Contains(string(out.Data), key) {
		t.Error("the webhooks query returns the secret")
	}
	if strings.Contains(f.logs.String(), key) {
		t.Error("the secret was logged")
	}
}

func TestWebhookDeliveriesAndRedelivery(t *testing.T) {
	f := newFixture(t)
	hook := f.createWebhook(acme, "https://hooks.example.com/in").Webhook
	f.createWebhook(globex, "https://globex.example.com/in")
	id := f.submit(acme, synthetic.Name)
	started := f.now()
	f.check(f.notifier.Apply(context.Background(), "event-1", job.JobStarted{JobID: id, Tenant: acme, Type: synthetic.Name, Seq: 1, At: started}))

	listed := f.webhooks(acme)
	if len(listed) != 1 || len(listed[0].Deliveries) != 2 {
		t.Fatalf("webhooks = %+v, want one with the deliveries of job.started and step.started", listed)
	}
	byType := map[string]deliveryView{}
	for _, d := range listed[0].Deliveries {
		byType[d.EventType] = d
		if d.WebhookID != hook.ID || d.JobID != id || d.State != "PENDING" || d.Attempts != 0 || d.NextAttemptAt == nil ||
			d.DeliveredAt != nil || d.LastError != nil || d.LastStatusCode != nil || !d.At.Equal(started) {
			t.Errorf("delivery = %+v", d)
		}
	}
	jobStarted, stepStarted := byType["JOB_STARTED"], byType["STEP_STARTED"]
	if jobStarted.Step != nil || stepStarted.Step == nil || *stepStarted.Step != 1 {
		t.Errorf("steps: job.started %v, step.started %v", jobStarted.Step, stepStarted.Step)
	}
	var data struct {
		JobType string `json:"job_type"`
	}
	if err := json.Unmarshal(jobStarted.Data, &data); err != nil || data.JobType != synthetic.Name {
		t.Errorf("job.started data = %s", jobStarted.Data)
	}
	if hooks := f.webhooks(globex); len(hooks) != 1 || len(hooks[0].Deliveries) != 0 {
		t.Errorf("globex's webhook got acme's deliveries: %+v", hooks)
	}

	// Filters and page size.
	var filtered struct{ Webhooks []webhookView }
	f.data(acme, `{ webhooks { delivered: deliveries(state: DELIVERED) { id } deliveries(state: PENDING, first: 1) { id } } }`, nil, &filtered)
	if len(filtered.Webhooks[0].Deliveries) != 1 {
		t.Errorf("first: 1 gave %d deliveries", len(filtered.Webhooks[0].Deliveries))
	}
	for _, first := range []int{0, 501} {
		errs := f.gqlErrors(acme, `query($n: Int) { webhooks { deliveries(first: $n) { id } } }`, map[string]any{"n": first})
		if errs[0].Extensions["code"] != "BAD_USER_INPUT" {
			t.Errorf("first %d: %+v", first, errs)
		}
	}

	// A pending delivery is being attempted: it cannot be redelivered, and the payload shows it as it is.
	p := f.redeliver(acme, jobStarted.ID)
	oneUserError(t, p.problems(), "InputError", "DELIVERY_PENDING", "input", "deliveryId")
	if p.Delivery == nil || p.Delivery.ID != jobStarted.ID || p.Delivery.State != "PENDING" {
		t.Errorf("payload delivery = %+v", p.Delivery)
	}
	// Another tenant's delivery and unknown ids are not found alike.
	for _, c := range []struct{ tenant, id string }{{globex, jobStarted.ID}, {acme, "no-such-delivery"}, {acme, strings.Repeat("d", 10_000)}} {
		p := f.redeliver(c.tenant, c.id)
		oneUserError(t, p.problems(), "InputError", "NOT_FOUND", "input", "deliveryId")
		if p.Delivery != nil {
			t.Errorf("%s redelivering %.20s got %+v", c.tenant, c.id, p.Delivery)
		}
	}

	// Every attempt failed (as the deliverer records it): the delivery is DEAD, and can be redelivered.
	claims, err := f.hooks.ClaimDeliveries(context.Background(), f.now(), time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	var claim *notify.Claim
	for i := range claims {
		if claims[i].Delivery.ID == jobStarted.ID {
			claim = &claims[i]
		}
	}
	if claim == nil {
		t.Fatalf("delivery %s was not claimed (%d claims)", jobStarted.ID, len(claims))
	}
	f.check(f.hooks.FinishDelivery(context.Background(), *claim, notify.Outcome{State: notify.DeliveryDead, Attempts: claim.Delivery.Attempts,
		StatusCode: 503, Error: "HTTP 503: busy", At: f.now()}))
	dead := f.deliveries(acme, "DEAD")
	if len(dead) != 1 || dead[0].ID != jobStarted.ID || dead[0].Attempts != 1 || dead[0].LastStatusCode == nil || *dead[0].LastStatusCode != 503 ||
		dead[0].LastError == nil || *dead[0].LastError != "HTTP 503: busy" || dead[0].NextAttemptAt != nil {
		t.Fatalf("dead deliveries = %+v", dead)
	}
	p = f.redeliver(acme, jobStarted.ID)
	if len(p.UserErrors) != 0 || p.Delivery == nil {
		t.Fatalf("redeliver = %+v", p)
	}
	if d := p.Delivery; d.ID != jobStarted.ID || d.State != "PENDING" || d.Attempts != 0 || d.NextAttemptAt == nil || d.EventType != "JOB_STARTED" {
		t.Errorf("redelivered = %+v", d)
	}
	if dead := f.deliveries(acme, "DEAD"); len(dead) != 0 {
		t.Errorf("still dead: %+v", dead)
	}
}

// deliveries lists the deliveries of the tenant's webhooks in one state.
func (f *fixture) deliveries(tenant, state string) []deliveryView {
	f.t.Helper()
	var out struct{ Webhooks []webhookView }
	f.data(tenant, `query($s: WebhookDeliveryState) { webhooks { deliveries(state: $s, first: 10) { `+deliveryFields+` } } }`, map[string]any{"s": state}, &out)
	var all []deliveryView
	for _, w := range out.Webhooks {
		all = append(all, w.Deliveries...)
	}
	return all
}

func TestCreateWebhookLimit(t *testing.T) {
	f := newFixture(t)
	for i := range notify.MaxWebhooksPerTenant {
		if p := f.createWebhook(acme, fmt.Sprintf("https://hooks.example.com/%d", i)); len(p.UserErrors) != 0 {
			t.Fatalf("webhook %d: %+v", i, p.UserErrors)
		}
	}
	p := f.createWebhook(acme, "https://hooks.example.com/one-too-many")
	oneUserError(t, p.problems(), "InputError", "LIMIT_REACHED")
	if p.Webhook != nil || p.Secret != nil {
		t.Errorf("payload = %+v", p)
	}
	// The limit is per tenant.
	if p := f.createWebhook(globex, "https://hooks.example.com/globex"); len(p.UserErrors) != 0 {
		t.Errorf("globex: %+v", p.UserErrors)
	}
}

func TestWebhooksWithoutAuthenticationBelongToTheDefaultTenant(t *testing.T) {
	f := newFixture(t, func(c *graph.Config) { c.AuthRequired = false })
	var out struct{ CreateWebhook webhookPayload }
	_, resp := f.gqlToken("", createWebhookMutation, map[string]any{"input": map[string]any{"url": "https://hooks.example.com/in"}})
	if len(resp.Errors) > 0 {
		t.Fatalf("errors %+v", resp.Errors)
	}
	if err := json.Unmarshal(resp.Data, &out); err != nil || out.CreateWebhook.Webhook == nil {
		t.Fatalf("createWebhook = %s (%v)", resp.Data, err)
	}
	stored, err := f.hooks.ListWebhooks(context.Background(), command.DefaultTenant)
	if err != nil || len(stored) != 1 || stored[0].ID != out.CreateWebhook.Webhook.ID {
		t.Errorf("webhooks of %s: %+v, %v", command.DefaultTenant, stored, err)
	}
}
