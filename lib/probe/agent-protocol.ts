/**
 * The agent's request protocol: one JSON probe request a line on its stdin, one JSON answer a line on
 * its stdout (see command-line.ts for the agent's usage, agent-in-namespace.ts for the host side).
 */
import { parseIPv4 } from '../../rules/ipv4.js';
import type { ProbeOutcome, ProbeProtocol } from './echo.js';

/** One probe request to an agent. */
export interface AgentRequest {
  readonly proto: ProbeProtocol;
  readonly to: string;
  readonly port: number;
  readonly timeoutMs?: number;
  /** Source address to bind (the namespace must hold it). */
  readonly from?: string;
  /** UDP only: the source port to send from, instead of the agent's next one. */
  readonly sourcePort?: number;
}

/** An agent's answer: the outcome, or why the probe could not run. */
export type AgentResponse =
  | { readonly id: number; readonly outcome: ProbeOutcome; readonly ms: number }
  | { readonly id: number; readonly error: string };

/**
 * UDP source ports an agent hands out in turn by default. Every UDP probe binds its port explicitly, so
 * the whole port space is the agent's; this default stays below the kernel's ephemeral range.
 */
export const AGENT_UDP_SOURCE_PORTS: readonly [number, number] = [10_000, 32_000];
/** The longest timeout a request may ask for. */
const AGENT_MAX_TIMEOUT_MS = 60_000;

/** Checks a request line; returns the id (null when even that is unusable) and the request or the problem. */
export function parseAgentRequest(line: string): { id: number | null; request: AgentRequest | null; problem: string | null } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { id: null, request: null, problem: 'not JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { id: null, request: null, problem: 'not a JSON object' };
  const object = value as Record<string, unknown>;
  const id = Number.isSafeInteger(object['id']) ? (object['id'] as number) : null;
  const fail = (problem: string) => ({ id, request: null, problem });
  if (id === null) return fail('id must be an integer');
  const { proto, to, port, timeoutMs, from, sourcePort } = object;
  if (proto !== 'tcp' && proto !== 'udp') return fail('proto must be tcp or udp');
  if (typeof to !== 'string' || parseIPv4(to) === null) return fail('to must be an IPv4 address');
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return fail('port must be 1 to 65535');
  if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > AGENT_MAX_TIMEOUT_MS)) {
    return fail(`timeoutMs must be 1 to ${AGENT_MAX_TIMEOUT_MS}`);
  }
  if (from !== undefined && (typeof from !== 'string' || parseIPv4(from) === null)) return fail('from must be an IPv4 address');
  if (sourcePort !== undefined && (proto !== 'udp' || typeof sourcePort !== 'number' || !Number.isInteger(sourcePort) || sourcePort < 1 || sourcePort > 65535)) {
    return fail('sourcePort must be 1 to 65535, and is for UDP only');
  }
  return {
    id,
    problem: null,
    request: { proto, to, port, ...(timeoutMs === undefined ? {} : { timeoutMs }), ...(from === undefined ? {} : { from }), ...(sourcePort === undefined ? {} : { sourcePort }) },
  };
}
