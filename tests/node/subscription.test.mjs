// Follows a job live through the jobmill GraphQL API the way a Node.js front end would: the npm
// graphql-ws client (graphql-transport-ws protocol) over the ws package.
//
//   JOBMILL_URL    http base of a running `jobmill serve`, e.g. http://127.0.0.1:8080 (required)
//   JOBMILL_TOKEN  API token from `jobmill token create --tenant NAME` (leave unset when auth is off)
//   JOBMILL_SUBJOBS, JOBMILL_SUBJOB_MS  size of the synthetic job (default 300 sub-jobs of 100 ms)
//
// It starts a synthetic job with startJob, subscribes to jobEvents and checks the stream: a SNAPSHOT
// first, changes after it, seq strictly increasing, a COMPLETED last with the job COMPLETED at progress
// 1, then the end of the stream. A second subscription resumes from the middle with afterSeq. With a
// token it also checks that a bad token is refused (HTTP 401, websocket close 4401). Exits non-zero with
// a message on the first failure; gives up after 60 seconds.

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const TIMEOUT_MS = 60_000;

const base = (process.env.JOBMILL_URL || '').replace(/\/+$/, '');
const token = process.env.JOBMILL_TOKEN || '';
const subjobs = Number(process.env.JOBMILL_SUBJOBS || 300);
const subjobMs = Number(process.env.JOBMILL_SUBJOB_MS || 100);

class Failure extends Error {}

function fail(message) {
  throw new Failure(message);
}

function check(ok, message) {
  if (!ok) fail(message);
}

const started = Date.now();
const timer = setTimeout(() => {
  console.error(`FAIL: gave up after ${TIMEOUT_MS / 1000} s (${progressNote()})`);
  process.exit(1);
}, TIMEOUT_MS);

let note = 'nothing done yet';
function progressNote() {
  return note;
}

const httpURL = `${base}/query`;
const wsURL = httpURL.replace(/^http/, 'ws');

function authHeaders(t) {
  return t ? { Authorization: `Bearer ${t}` } : {};
}

// post sends one GraphQL request over HTTP and returns the response's data, failing on HTTP or GraphQL
// errors.
async function post(query, variables, t = token) {
  let res;
  try {
    res = await fetch(httpURL, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json', ...authHeaders(t) },
      body: JSON.stringify({ query, variables }),
    });
  } catch (err) {
    fail(`POST ${httpURL}: ${err.cause?.message || err.message}`);
  }
  const text = await res.text();
  check(res.ok, `POST ${httpURL}: HTTP ${res.status}: ${text.slice(0, 500)}`);
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    fail(`POST ${httpURL}: the answer is not JSON: ${text.slice(0, 500)}`);
  }
  check(!body.errors?.length, `POST ${httpURL}: GraphQL errors: ${JSON.stringify(body.errors)}`);
  return body.data;
}

function newClient(t) {
  return createClient({
    url: wsURL,
    webSocketImpl: WebSocket,
    connectionParams: authHeaders(t),
    // A test wants the first failure, not a reconnect.
    retryAttempts: 0,
    shouldRetry: () => false,
  });
}

// describe turns what graphql-ws hands to error() (a CloseEvent, an Error or GraphQL errors) into text.
function describe(err) {
  if (err && typeof err.code === 'number') return `websocket closed with code ${err.code} ${err.reason || ''}`.trim();
  if (Array.isArray(err)) return `GraphQL errors: ${JSON.stringify(err)}`;
  return String(err?.message || err);
}

// collect subscribes and resolves with every event once the server completes the stream.
function collect(client, query, variables, onEvent = () => {}) {
  return new Promise((resolve, reject) => {
    const events = [];
    client.subscribe(
      { query, variables },
      {
        next(result) {
          if (result.errors?.length) {
            reject(new Failure(`jobEvents sent errors: ${JSON.stringify(result.errors)}`));
            return;
          }
          events.push(result.data.jobEvents);
          onEvent(result.data.jobEvents, events);
        },
        error(err) {
          reject(new Failure(`jobEvents failed after ${events.length} events: ${describe(err)}`));
        },
        complete() {
          resolve(events);
        },
      },
    );
  });
}

const START_JOB = `
  mutation Start($input: StartJobInput!) {
    startJob(input: $input) {
      job { id type state seq }
      userErrors { __typename code message field }
    }
  }`;

const JOB_EVENTS = `
  subscription Follow($jobId: ID!, $afterSeq: Int) {
    jobEvents(jobId: $jobId, afterSeq: $afterSeq) {
      seq
      kind
      step
      job {
        id
        state
        progress
        seq
        counts { total succeeded failed inFlight }
      }
    }
  }`;

const summary = (events) => events.map((e) => `${e.seq}:${e.kind}`).join(' ');

// checkStream requires seq strictly increasing, each message's job at that seq, progress never going
// back, and a stream that ends with the job COMPLETED at progress 1: with a COMPLETED event, or, for a
// stream that began after the job had ended (allowed with endedBefore), with its SNAPSHOT.
function checkStream(name, events, jobId, endedBefore = false) {
  check(events.length > 0, `${name}: the stream completed without any event`);
  for (const [i, e] of events.entries()) {
    check(e.job.id === jobId, `${name}: event ${i} is about job ${e.job.id}, not ${jobId}`);
    check(e.job.seq === e.seq, `${name}: event ${i} has seq ${e.seq} but its job has seq ${e.job.seq}`);
    if (i > 0) {
      const prev = events[i - 1];
      check(e.seq > prev.seq, `${name}: seq not strictly increasing at event ${i}: ${summary(events)}`);
      check(e.job.progress >= prev.job.progress, `${name}: progress went back from ${prev.job.progress} to ${e.job.progress} at event ${i}`);
    }
  }
  const last = events.at(-1);
  const snapshotOnly = endedBefore && events.length === 1 && last.kind === 'SNAPSHOT';
  check(last.kind === 'COMPLETED' || snapshotOnly, `${name}: last event is ${last.kind}, want COMPLETED: ${summary(events)}`);
  check(last.job.state === 'COMPLETED', `${name}: last event's job is ${last.job.state}, want COMPLETED`);
  check(last.job.progress === 1, `${name}: last event's progress is ${last.job.progress}, want 1`);
  const terminal = events.findIndex((e) => ['COMPLETED', 'FAILED', 'CANCELLED'].includes(e.job.state));
  check(terminal === events.length - 1, `${name}: events after the job ended: ${summary(events)}`);
}

// expectRefusedSocket opens a subscription with a bad token and requires the close code 4401.
async function expectRefusedSocket() {
  const client = newClient('jm_not-a-real-token');
  try {
    await collect(client, JOB_EVENTS, { jobId: 'any' });
    fail('a subscription with an invalid token completed; want the socket closed with 4401');
  } catch (err) {
    if (!(err instanceof Failure)) throw err;
    check(/closed with code 4401\b/.test(err.message), `a subscription with an invalid token: ${err.message}; want websocket close code 4401`);
  } finally {
    await client.dispose();
  }
}

async function expectRefusedPost() {
  const res = await fetch(httpURL, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: 'Bearer jm_not-a-real-token' },
    body: JSON.stringify({ query: '{ jobTypes { name } }' }),
  });
  await res.arrayBuffer();
  check(res.status === 401, `POST with an invalid token answered HTTP ${res.status}, want 401`);
}

async function main() {
  check(/^https?:\/\/[^/]+/.test(base), `JOBMILL_URL must be the server's http base, e.g. http://127.0.0.1:8080 (got ${JSON.stringify(base)})`);
  check(Number.isInteger(subjobs) && subjobs > 0, `JOBMILL_SUBJOBS must be a positive integer (got ${process.env.JOBMILL_SUBJOBS})`);

  if (token) {
    note = 'checking that an invalid token is refused';
    await expectRefusedPost();
    await expectRefusedSocket();
  }

  note = 'starting a synthetic job';
  const key = `node-subscription-${process.pid}-${Date.now()}`;
  const data = await post(START_JOB, {
    input: {
      type: 'synthetic',
      input: { subjobs, duration_ms: subjobMs, jitter_ms: Math.round(subjobMs / 2) },
      idempotencyKey: key,
    },
  });
  const payload = data.startJob;
  check(payload.userErrors.length === 0, `startJob returned userErrors: ${JSON.stringify(payload.userErrors)}`);
  check(payload.job?.id, `startJob returned no job: ${JSON.stringify(payload)}`);
  const jobId = payload.job.id;
  check(payload.job.type === 'synthetic', `startJob returned a job of type ${payload.job.type}`);

  // The same idempotency key must give the same job, not a second one.
  const again = await post(START_JOB, { input: { type: 'synthetic', input: { subjobs: 1 }, idempotencyKey: key } });
  check(again.startJob.job?.id === jobId, `startJob with the same idempotencyKey returned job ${again.startJob.job?.id}, want ${jobId}`);

  note = `following job ${jobId}`;
  const client = newClient(token);
  let resumed; // the second subscription, started from the middle of the first
  let resumedFrom;
  try {
    const events = await collect(client, JOB_EVENTS, { jobId }, (e, all) => {
      note = `following job ${jobId}: ${summary(all)}`;
      if (!resumed && all.length === 2 && e.kind !== 'COMPLETED') {
        resumedFrom = e.seq;
        resumed = collect(client, JOB_EVENTS, { jobId, afterSeq: e.seq });
        resumed.catch(() => {}); // awaited below; this only keeps an early failure from being unhandled
      }
    });

    check(events[0].kind === 'SNAPSHOT', `first event is ${events[0].kind}, want SNAPSHOT: ${summary(events)}`);
    check(
      !['COMPLETED', 'FAILED', 'CANCELLED'].includes(events[0].job.state),
      `job ${jobId} had ended (${events[0].job.state}) before the subscription started: make it larger with JOBMILL_SUBJOBS or JOBMILL_SUBJOB_MS`,
    );
    check(
      events.slice(1).some((e) => e.kind === 'PROGRESS' || e.kind === 'STEP_STARTED'),
      `no PROGRESS or STEP_STARTED after the SNAPSHOT: ${summary(events)}`,
    );
    checkStream('jobEvents', events, jobId);
    const last = events.at(-1).job;
    check(last.counts.total === subjobs, `the completed job counts ${last.counts.total} sub-jobs, want ${subjobs}`);
    check(last.counts.succeeded === subjobs, `the completed job counts ${last.counts.succeeded} succeeded sub-jobs, want ${subjobs}`);
    const steps = events.filter((e) => e.kind === 'STEP_STARTED').map((e) => e.step);
    check(steps.every((s, i) => i === 0 || s > steps[i - 1]), `STEP_STARTED steps not increasing: ${steps}`);

    if (resumed) {
      note = `following job ${jobId} from seq ${resumedFrom}`;
      const later = await resumed;
      // The job may have ended by the time this subscription started: then a SNAPSHOT of the end is all.
      checkStream(`jobEvents(afterSeq: ${resumedFrom})`, later, jobId, true);
      check(later[0].seq > resumedFrom, `jobEvents(afterSeq: ${resumedFrom}) began with seq ${later[0].seq}`);
    }

    const ms = Date.now() - started;
    console.log(`ok: job ${jobId} (${subjobs} sub-jobs) followed to COMPLETED in ${ms} ms: ${events.length} events: ${summary(events)}`);
    if (resumed) console.log(`ok: resumed with afterSeq ${resumedFrom} and received the rest`);
  } finally {
    await client.dispose();
  }
}

try {
  await main();
  clearTimeout(timer);
} catch (err) {
  console.error(`FAIL: ${err instanceof Failure ? err.message : err?.stack || err}`);
  process.exit(1);
}
