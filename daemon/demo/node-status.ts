/** The node's status endpoint as the demo reads it: the parts of /status and /explain it uses, and how it asks. */

import { PalisadeError } from '../../lib/errors.js';
import type { Lab } from '../../lib/lab/cluster.js';
import { DEMO_NAMESPACE, DEMO_NODE, DEMO_PODS, ECHO_PORT } from './script.js';
import type { ExplainExpectation } from './script.js';

export const STATUS_ADDRESS = '127.0.0.1:9710';

export interface Counter {
  readonly packets: number;
  readonly bytes: number;
}
export interface StatusEndpoint {
  readonly namespace: string;
  readonly name: string;
  readonly ip: string;
  readonly interfaces: readonly string[];
  readonly isolated: { readonly ingress: boolean; readonly egress: boolean };
  readonly policies: { readonly ingress: readonly string[]; readonly egress: readonly string[] };
  readonly dropped: { readonly ingress: Counter | null; readonly egress: Counter | null };
  readonly clusterNetworkPolicies?: { readonly ingress: readonly string[]; readonly egress: readonly string[] };
}
export interface StatusDocument {
  readonly ready: boolean;
  readonly readyReason: string;
  readonly backend: { readonly name: string; readonly reason: string } | null;
  readonly sync: { readonly pendingChanges: boolean; readonly lastError: string | null; readonly lastDurationMs: number | null; readonly lastSuccess: string | null };
  readonly endpoints: readonly StatusEndpoint[];
  readonly failedPolicies: readonly { readonly policy: string; readonly why: readonly string[] }[];
}
interface ExplainDirection {
  readonly allowed: boolean;
  readonly reason: string;
  /** The tier that decided (Admin, NetworkPolicy, Baseline, Default), or null where no policy can apply. */
  readonly tier?: string | null;
}
export interface ExplainAnswer {
  readonly allowed: boolean;
  readonly egress: ExplainDirection;
  readonly ingress: ExplainDirection;
}

export interface DropRecordView {
  readonly time: string;
  readonly verdict: string;
  readonly direction: string;
  readonly protocol: string;
  readonly port: number | null;
  readonly source: { readonly ip: string; readonly namespace?: string; readonly pod?: string };
  readonly destination: { readonly ip: string; readonly namespace?: string; readonly pod?: string };
  readonly policies: readonly string[];
  readonly clusterPolicy?: { readonly tier: string; readonly name: string; readonly priority: number; readonly rule: number; readonly ruleName: string };
}

/** The drop log's records for one demo pod, newest first. */
export async function readDrops(lab: Lab, pod: string): Promise<readonly DropRecordView[]> {
  const query = dropsQuery(pod);
  const reply = await lab.status(DEMO_NODE.name, query);
  if (reply.status !== 200) throw new PalisadeError('DEMO', `GET ${query} on ${DEMO_NODE.name}: ${reply.status === 0 ? reply.body : `HTTP ${reply.status}: ${reply.body}`}`);
  return (JSON.parse(reply.body) as { drops: DropRecordView[] }).drops;
}

export function dropsQuery(pod: string): string {
  return `/drops?pod=${DEMO_NAMESPACE}/${pod}&limit=5`;
}

export async function readStatus(lab: Lab): Promise<StatusDocument> {
  const reply = await lab.status(DEMO_NODE.name, '/status');
  if (reply.status !== 200) throw new PalisadeError('DEMO', `GET /status on ${DEMO_NODE.name}: ${reply.status === 0 ? reply.body : `HTTP ${reply.status}`}`);
  return JSON.parse(reply.body) as StatusDocument;
}

export async function readExplain(lab: Lab, question: ExplainExpectation): Promise<ExplainAnswer> {
  const { query } = explainQuery(question);
  const reply = await lab.status(DEMO_NODE.name, query);
  if (reply.status !== 200) throw new PalisadeError('DEMO', `GET ${query} on ${DEMO_NODE.name}: ${reply.status === 0 ? reply.body : `HTTP ${reply.status}: ${reply.body}`}`);
  return JSON.parse(reply.body) as ExplainAnswer;
}

/** The /explain path for a question: as shown to the reader, and URL-encoded as sent. */
export function explainQuery(question: ExplainExpectation): { shown: string; query: string } {
  const params: [string, string][] = [['from', endpointRef(question.from)], ['to', endpointRef(question.to)], ['protocol', 'TCP'], ['port', String(ECHO_PORT)]];
  return { shown: `/explain?${params.map(([k, v]) => `${k}=${v}`).join('&')}`, query: `/explain?${new URLSearchParams(params).toString()}` };
}

function endpointRef(value: string): string {
  return DEMO_PODS.some((p) => p.name === value) ? `${DEMO_NAMESPACE}/${value}` : value;
}
