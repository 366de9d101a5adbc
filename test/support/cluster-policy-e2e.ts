/**
 * Builders and waits shared by the ClusterNetworkPolicy e2e suites (test/e2e/cluster-policy*.test.ts):
 * short policy builders in the lab's vocabulary (namespaces labelled ns=<name>, pods pod=<name>), the
 * /drops record as the daemon serves it, and the waits that tie what a test changed to what both
 * daemons enforce.
 */
import assert from 'node:assert/strict';
import { clusterPolicy, policy } from './builders.js';
import { NODES } from './e2e-cluster.js';
import type { E2eCluster, ProbeTarget } from './e2e-cluster.js';
import type { DropRecord } from '../../daemon/drop-log.js';

export type Obj = Record<string, unknown>;
export type Tier = 'Admin' | 'Baseline';

/** A subject or peer: the namespaces labelled ns=<name>. */
export const ns = (name: string): Obj => ({ namespaces: { matchLabels: { ns: name } } });
/** A subject or peer: every namespace. */
export const every: Obj = { namespaces: {} };
/** A subject or peer: pods with these labels in any namespace. */
export const podsLabelled = (labels: Record<string, string>): Obj => ({ pods: { namespaceSelector: {}, podSelector: { matchLabels: labels } } });
export const cnp = (name: string, tier: Tier, priority: number, spec: Obj): Obj => clusterPolicy(name, { tier, priority, ...spec });
export const tcp = (port: number): Obj => ({ tcp: { destinationPort: { number: port } } });
export const allowAll = (namespace: string): Obj => policy(namespace, 'allow-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'], ingress: [{}], egress: [{}] });
export const denyIngress = (namespace: string): Obj => policy(namespace, 'deny-ingress', { podSelector: {}, policyTypes: ['Ingress'] });
/** Isolates the namespace's pods for ingress and lets in only its own pods. */
export const sameNamespaceOnly = (namespace: string): Obj => policy(namespace, 'same-namespace', { podSelector: {}, policyTypes: ['Ingress'], ingress: [{ from: [{ podSelector: {} }] }] });

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A /drops record, as the daemon serves it. */
export type { DropRecord } from '../../daemon/drop-log.js';

export interface DropWait {
  /** Only records made at or after this time (ms since the epoch): the ring keeps earlier cases' records. */
  readonly since?: number;
  /**
   * Sends the denied packet again, before each look. A Deny rule logs each pod's drops under a
   * per-pod rate limit, so after a matrix has flooded the pod one more packet may go unrecorded.
   */
  readonly probe?: () => Promise<unknown>;
}

/** The newest record at /drops?pod=<pod> on `node` that `find` accepts, waiting up to 10 s for one. */
export async function waitForDrop(c: E2eCluster, node: string, pod: string, find: (r: DropRecord) => boolean, what: string, options: DropWait = {}): Promise<DropRecord> {
  const deadline = Date.now() + 10_000;
  const since = options.since ?? 0;
  for (;;) {
    await options.probe?.();
    const { status, body } = await c.lab.status(node, `/drops?pod=${pod}`);
    assert.equal(status, 200, body);
    const found = (JSON.parse(body) as { drops: DropRecord[] }).drops.find((r) => Date.parse(r.time) >= since && find(r));
    if (found !== undefined) return found;
    if (Date.now() > deadline) assert.fail(`${what}: no record at /drops?pod=${pod} on ${node}: ${body.slice(0, 600)}`);
    await sleep(200);
  }
}

interface ClusterPolicyStatus {
  readonly served: boolean | null;
  readonly count: number;
  readonly discovery: { readonly intervalSeconds: number };
}

/** Each node's /status `clusterNetworkPolicies`. */
export async function clusterPolicyStatus(c: E2eCluster): Promise<ClusterPolicyStatus[]> {
  return Promise.all(NODES.map(async (n) => (await c.status(n.name))['clusterNetworkPolicies'] as ClusterPolicyStatus));
}

/** Polls both daemons' /status until `ok` holds for each; returns the ms it took. */
export async function waitForStatus(c: E2eCluster, ok: (s: ClusterPolicyStatus) => boolean, what: string, deadlineMs = 15_000): Promise<number> {
  const started = Date.now();
  for (;;) {
    const all = await clusterPolicyStatus(c);
    if (all.every(ok)) return Date.now() - started;
    if (Date.now() - started > deadlineMs) assert.fail(`${what}: not within ${deadlineMs} ms: ${JSON.stringify(all)}`);
    await sleep(50);
  }
}

/**
 * Waits until both daemons have applied a sync that began after `since` with nothing pending, then
 * holds `holdMs` so a probe stream (a round every 50 ms) sees the state the change led to for several
 * rounds. A change that alters no watched verdict shows nowhere else, and without this the next change
 * could fold into the same sync and hide the window between the two. (Reading /status costs a process
 * in the node's namespace, a few hundred ms, so the state is probed for longer than the hold.)
 */
export async function settled(c: E2eCluster, since: number, holdMs = 200): Promise<void> {
  assert.ok(await c.daemonsSynced(since, 10_000), `the daemons did not sync after the change: ${await c.daemonDiagnostics()}`);
  await sleep(holdMs);
}

/**
 * Probes `from` -> `to` back to back (short timeouts) until three in a row come out `outcome`, and
 * returns when the first of them was sent, in ms after `since`. For how long a change took to be
 * enforced, measured with packets.
 */
export async function msUntil(c: E2eCluster, since: number, from: string, to: string, target: ProbeTarget, outcome: 'ok' | 'timeout', deadlineMs = 20_000): Promise<number> {
  let firstAt: number | null = null;
  let run = 0;
  for (;;) {
    const sentAt = Date.now();
    const got = await c.probe(from, to, target, 300);
    if (got === outcome) {
      firstAt ??= sentAt;
      if (++run === 3) return firstAt - since;
    } else {
      firstAt = null;
      run = 0;
      if (sentAt - since > deadlineMs) assert.fail(`${from} -> ${to} ${target.proto}/${target.port}: still ${got} after ${deadlineMs} ms, wanted ${outcome}`);
      await sleep(50);
    }
  }
}
