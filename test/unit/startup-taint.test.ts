import assert from 'node:assert/strict';
import { parseDaemonConfig } from '../../daemon/config.js';
import { DEFAULT_STARTUP_TAINT, formatStartupTaint, parseStartupTaint, removalPatch } from '../../daemon/startup-taint.js';
import type { JsonPatchOperation, NodeTaint, StartupTaint } from '../../daemon/startup-taint.js';
import { TaintRemover, watchingNode } from '../../daemon/taint-remover.js';
import type { RemovalOutcome, TaintClient } from '../../daemon/taint-remover.js';
import { ApiRequestError } from '../../lib/kube/api-client.js';
import type { KubeObject, ReflectorHandler } from '../../lib/kube/reflector.js';
import { applyJsonPatch, JsonPatchError } from '../../lib/lab/json-patch.js';
import type { Logger } from '../../lib/logger.js';
import { FakeClock } from '../support/fake-clock.js';

/** The startup taint: the flag, the patch that removes it, and the remover's protocol with the API server. */

const TAINT: StartupTaint = { key: 'palisade.io/agent-not-ready', value: 'true', effect: 'NoSchedule' };
const startup: NodeTaint = { key: 'palisade.io/agent-not-ready', value: 'true', effect: 'NoSchedule' };
const cordon: NodeTaint = { key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule', timeAdded: '2025-01-01T00:00:00Z' };
const other: NodeTaint = { key: 'example.com/gpu', value: 'yes', effect: 'NoExecute' };

const nodeWith = (name: string, taints: readonly NodeTaint[]): KubeObject => ({ apiVersion: 'v1', kind: 'Node', metadata: { name, resourceVersion: '5' }, spec: { taints } });

describe('the --startup-taint flag', () => {
  it('defaults to palisade.io/agent-not-ready=true:NoSchedule', () => {
    const config = parseDaemonConfig([], { NODE_NAME: 'n' });
    assert.deepEqual(config.startupTaint, TAINT);
    assert.equal(formatStartupTaint(config.startupTaint!), DEFAULT_STARTUP_TAINT);
  });

  it('reads KEY=VALUE:EFFECT and KEY:EFFECT (any value), from the flag or PALISADE_STARTUP_TAINT', () => {
    assert.deepEqual(parseDaemonConfig(['--node-name', 'n', '--startup-taint', 'example.com/cni-not-ready:NoExecute'], {}).startupTaint, { key: 'example.com/cni-not-ready', value: null, effect: 'NoExecute' });
    assert.deepEqual(parseDaemonConfig(['--node-name', 'n'], { PALISADE_STARTUP_TAINT: 'agent=ok:PreferNoSchedule' }).startupTaint, { key: 'agent', value: 'ok', effect: 'PreferNoSchedule' });
    assert.deepEqual(parseDaemonConfig(['--node-name', 'n', '--startup-taint', 'a=b:NoSchedule'], { PALISADE_STARTUP_TAINT: 'none' }).startupTaint, { key: 'a', value: 'b', effect: 'NoSchedule' });
  });

  it('is off with none', () => {
    assert.equal(parseDaemonConfig(['--node-name', 'n', '--startup-taint', 'none'], {}).startupTaint, null);
    assert.equal(parseDaemonConfig(['--node-name', 'n'], { PALISADE_STARTUP_TAINT: 'none' }).startupTaint, null);
  });

  const bad: readonly [string, RegExp][] = [
    ['palisade.io/agent-not-ready', /must be KEY\[=VALUE\]:EFFECT/],
    ['palisade.io/agent-not-ready=true:NoWay', /effect "NoWay" must be one of NoSchedule, PreferNoSchedule, NoExecute/],
    ['Palisade_IO/x:NoSchedule', /key "Palisade_IO\/x" is not a qualified name/],
    [':NoSchedule', /key "" is not a qualified name/],
    ['k=has space:NoSchedule', /value "has space" is not a label value/],
    [`k=${'v'.repeat(64)}:NoSchedule`, /is not a label value/],
  ];
  for (const [text, message] of bad) {
    it(`refuses "${text.length > 40 ? `${text.slice(0, 40)}…` : text}", naming the flag, with the other errors`, () => {
      assert.throws(() => parseDaemonConfig(['--startup-taint', text, '--log-level', 'loud'], {}), (error: Error) => {
        assert.match(error.message, new RegExp(`--startup-taint "${text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}": `));
        assert.match(error.message, message);
        assert.match(error.message, /--log-level "loud"/);
        assert.match(error.message, /--node-name .* is required/);
        return true;
      });
    });
  }

  it('accepts an empty value (kubelet registers KEY:EFFECT with one) only when the flag names it', () => {
    const parsed = parseStartupTaint('k=:NoSchedule');
    assert.deepEqual(parsed, { ok: true, taint: { key: 'k', value: '', effect: 'NoSchedule' } });
  });
});

describe('the patch that removes the startup taint', () => {
  it('tests the whole taints list as read, then removes the one taint by its index', () => {
    assert.deepEqual(removalPatch(TAINT, [cordon, startup, other]), [
      { op: 'test', path: '/spec/taints', value: [cordon, startup, other] },
      { op: 'remove', path: '/spec/taints/1' },
    ]);
  });

  it('is null when the node does not carry the taint, or carries it with another value or effect', () => {
    assert.equal(removalPatch(TAINT, []), null);
    assert.equal(removalPatch(TAINT, [cordon, other]), null);
    assert.equal(removalPatch(TAINT, [{ ...startup, value: 'false' }]), null);
    assert.equal(removalPatch(TAINT, [{ ...startup, effect: 'NoExecute' }]), null);
  });

  it('matches any value when the flag gave none', () => {
    const anyValue: StartupTaint = { ...TAINT, value: null };
    assert.deepEqual(removalPatch(anyValue, [other, { key: TAINT.key, effect: 'NoSchedule' }])?.[1], { op: 'remove', path: '/spec/taints/1' });
  });

  it('applied to the node it was made from, removes that taint and nothing else', () => {
    const node = nodeWith('a', [cordon, startup, other]);
    const patched = applyJsonPatch(node, removalPatch(TAINT, [cordon, startup, other]));
    assert.deepEqual(patched, nodeWith('a', [cordon, other]));
  });

  it('applied to a node whose taints changed since they were read, fails its test (422) and changes nothing', () => {
    const patch = removalPatch(TAINT, [cordon, startup]);
    const moved = nodeWith('a', [startup, other]);
    assert.throws(() => applyJsonPatch(moved, patch), (error: JsonPatchError) => error.status === 422 && /testing value \/spec\/taints failed/.test(error.message));
    assert.deepEqual(moved, nodeWith('a', [startup, other]));
  });
});

/** A fake API server for one node: a taints list, each request recorded, failures queued. */
class FakeNodeApi implements TaintClient {
  readonly requests: string[] = [];
  readonly patches: JsonPatchOperation[][] = [];
  readonly failures: { method: 'GET' | 'PATCH'; error: Error }[] = [];
  /** Runs before a PATCH is applied: a writer changing the node in between. */
  beforePatch: (() => void) | null = null;
  taints: NodeTaint[];
  gate: Promise<void> | null = null;

  constructor(taints: NodeTaint[]) {
    this.taints = taints;
  }

  private take(method: 'GET' | 'PATCH'): void {
    // In order: the next failure is thrown by the request it names, when that request comes.
    if (this.failures[0]?.method === method) throw this.failures.shift()!.error;
  }

  async getJson(path: string): Promise<unknown> {
    this.requests.push(`GET ${path}`);
    if (this.gate !== null) await this.gate;
    this.take('GET');
    return nodeWith('node-a', structuredClone(this.taints));
  }

  async patchJson(path: string, patch: readonly JsonPatchOperation[]): Promise<unknown> {
    this.requests.push(`PATCH ${path}`);
    this.patches.push([...patch]);
    this.take('PATCH');
    this.beforePatch?.();
    let patched: KubeObject;
    try {
      patched = applyJsonPatch(nodeWith('node-a', this.taints), patch);
    } catch (error) {
      if (error instanceof JsonPatchError) throw new ApiRequestError(path, error.status, JSON.stringify({ message: error.message }), undefined, 'PATCH');
      throw error;
    }
    this.taints = (patched.spec as { taints: NodeTaint[] }).taints;
    return patched;
  }
}

class RecordingLogger implements Logger {
  readonly lines: { level: string; message: string; fields: Record<string, unknown> }[] = [];
  debug(fields: Record<string, unknown>, message: string): void { this.lines.push({ level: 'debug', message, fields }); }
  info(fields: Record<string, unknown>, message: string): void { this.lines.push({ level: 'info', message, fields }); }
  warn(fields: Record<string, unknown>, message: string): void { this.lines.push({ level: 'warn', message, fields }); }
  error(fields: Record<string, unknown>, message: string): void { this.lines.push({ level: 'error', message, fields }); }
}

const conflict = () => new ApiRequestError('/api/v1/nodes/node-a', 409, '{"reason":"Conflict"}', undefined, 'PATCH');
const testFailed = () => new ApiRequestError('/api/v1/nodes/node-a', 422, '{"message":"testing value /spec/taints failed"}', undefined, 'PATCH');
const forbidden = () => new ApiRequestError('/api/v1/nodes/node-a', 403, '{"reason":"Forbidden"}', undefined, 'PATCH');

function remover(api: FakeNodeApi) {
  const clock = new FakeClock();
  const logger = new RecordingLogger();
  const outcomes: RemovalOutcome[] = [];
  const present: boolean[] = [];
  const taint = new TaintRemover({ taint: TAINT, nodeName: 'node-a', client: api, clock, logger, retryBaseMs: 1000, retryMaxMs: 8000, onOutcome: (o) => outcomes.push(o), onPresent: (p) => present.push(p) });
  return { taint, clock, logger, outcomes, present };
}

describe('the startup taint remover', () => {
  it('does nothing before palisade is ready, then GETs the node and PATCHes the taint out once', async () => {
    const api = new FakeNodeApi([cordon, startup]);
    const { taint, clock, logger, outcomes, present } = remover(api);
    taint.observe(nodeWith('node-a', api.taints));
    await clock.advance(60_000);
    assert.deepEqual(api.requests, [], 'not before the first apply');
    assert.equal(taint.status().onNode, true);
    taint.setReady(true);
    await taint.idle();
    assert.deepEqual(api.requests, ['GET /api/v1/nodes/node-a', 'PATCH /api/v1/nodes/node-a']);
    assert.deepEqual(api.taints, [cordon]);
    assert.deepEqual(outcomes, ['removed']);
    assert.deepEqual(present, [true, false]);
    assert.deepEqual(logger.lines.filter((l) => l.level !== 'debug').map((l) => l.message), ['startup taint removed: pods can now be scheduled on this node, and meet its rules']);
    const status = taint.status();
    assert.deepEqual({ ...status, lastRemovedAt: null }, { taint: 'palisade.io/agent-not-ready=true:NoSchedule', key: 'palisade.io/agent-not-ready', onNode: false, removed: true, removals: 1, lastRemovedAt: null, error: null, consecutiveFailures: 0, retryAt: null });
    // Later syncs and the watch's echo of the change send nothing more.
    taint.setReady(true);
    taint.observe(nodeWith('node-a', api.taints));
    await clock.advance(60_000);
    assert.equal(api.requests.length, 2);
  });

  it('sends nothing when the node has no startup taint, nor when the watch was behind and the GET finds none', async () => {
    const api = new FakeNodeApi([cordon]);
    const { taint } = remover(api);
    taint.observe(nodeWith('node-a', [cordon]));
    taint.setReady(true);
    await taint.idle();
    assert.deepEqual(api.requests, []);
    taint.observe(nodeWith('node-a', [cordon, startup]));
    await taint.idle();
    assert.deepEqual(api.requests, ['GET /api/v1/nodes/node-a'], 'a GET, and no PATCH');
    assert.equal(taint.status().onNode, false);
  });

  it('reads the node again at once on a conflict (409) or a failed test (422), and removes the taint where it now is', async () => {
    const api = new FakeNodeApi([startup]);
    const { taint, clock, outcomes } = remover(api);
    api.failures.push({ method: 'PATCH', error: conflict() });
    // Someone adds a taint ahead of palisade's between its read and its write: the test catches it.
    api.beforePatch = () => {
      if (api.patches.length === 2) api.taints = [other, ...api.taints];
    };
    taint.observe(nodeWith('node-a', [startup]));
    taint.setReady(true);
    await clock.advance(0);
    assert.deepEqual(outcomes, ['conflict', 'conflict', 'removed']);
    assert.deepEqual(api.requests.filter((r) => r.startsWith('GET')).length, 3, 'read afresh before every PATCH');
    assert.deepEqual(api.taints, [other]);
    assert.deepEqual(api.patches.at(-1), [{ op: 'test', path: '/spec/taints', value: [other, startup] }, { op: 'remove', path: '/spec/taints/1' }]);
    assert.equal(clock.now(), 0, 'no backoff for the first conflicts');
  });

  it('backs off on conflicts that keep coming', async () => {
    const api = new FakeNodeApi([startup]);
    const { taint, clock, outcomes } = remover(api);
    for (let i = 0; i < 5; i++) api.failures.push({ method: 'PATCH', error: testFailed() });
    taint.observe(nodeWith('node-a', [startup]));
    taint.setReady(true);
    await clock.advance(0);
    assert.deepEqual(outcomes, ['conflict', 'conflict', 'conflict', 'conflict']);
    assert.equal(taint.status().retryAt, new Date(8000).toISOString(), 'the fourth failure in a row waits 1 s × 2³');
    await clock.advance(8000 + 8000);
    assert.deepEqual(outcomes, ['conflict', 'conflict', 'conflict', 'conflict', 'conflict', 'removed']);
  });

  it('backs off on other failures (403 from the admission policy, the API server away), logging once per cause, and keeps trying', async () => {
    const api = new FakeNodeApi([startup]);
    const { taint, clock, logger, outcomes } = remover(api);
    for (let i = 0; i < 4; i++) api.failures.push({ method: 'PATCH', error: forbidden() });
    api.failures.push({ method: 'GET', error: new Error('connect ECONNREFUSED') });
    taint.observe(nodeWith('node-a', [startup]));
    taint.setReady(true);
    await taint.idle();
    assert.equal(api.requests.length, 2);
    assert.equal(taint.status().consecutiveFailures, 1);
    assert.match(taint.status().error ?? '', /PATCH \/api\/v1\/nodes\/node-a: HTTP 403/);
    assert.equal(taint.status().retryAt, new Date(1000).toISOString());
    await clock.advance(999);
    assert.equal(api.requests.length, 2, 'not before the backoff');
    await clock.advance(1);
    assert.equal(api.requests.length, 4);
    await clock.advance(2000 + 4000 + 8000);
    assert.equal(taint.status().consecutiveFailures, 5, JSON.stringify(taint.status()));
    assert.match(taint.status().error ?? '', /ECONNREFUSED/);
    await clock.advance(8000);
    assert.deepEqual(api.taints, []);
    assert.deepEqual(outcomes, ['error', 'error', 'error', 'error', 'error', 'removed']);
    const warnings = logger.lines.filter((l) => l.level === 'warn');
    assert.equal(warnings.length, 2, 'the first 403, then the change of cause');
    assert.equal(taint.status().error, null);
  });

  it('removes the taint again when it comes back while palisade is ready, and leaves it while palisade is not', async () => {
    const api = new FakeNodeApi([startup]);
    const { taint, outcomes } = remover(api);
    taint.observe(nodeWith('node-a', [startup]));
    taint.setReady(true);
    await taint.idle();
    assert.deepEqual(outcomes, ['removed']);
    api.taints = [startup];
    taint.observe(nodeWith('node-a', [startup]));
    await taint.idle();
    assert.deepEqual(outcomes, ['removed', 'removed']);
    taint.setReady(false);
    api.taints = [startup];
    taint.observe(nodeWith('node-a', [startup]));
    await taint.idle();
    assert.deepEqual(api.taints, [startup], 'not ready: the taint keeps new pods away');
    taint.setReady(true);
    await taint.idle();
    assert.deepEqual(api.taints, []);
    assert.equal(taint.status().removals, 3);
  });

  it('does not PATCH when palisade stops being ready while the node is read', async () => {
    const api = new FakeNodeApi([startup]);
    const { taint } = remover(api);
    let release!: () => void;
    api.gate = new Promise((resolve) => { release = resolve; });
    taint.observe(nodeWith('node-a', [startup]));
    taint.setReady(true);
    taint.setReady(false);
    release();
    await taint.idle();
    assert.deepEqual(api.requests, ['GET /api/v1/nodes/node-a']);
  });

  it('sees only its own node through the Node watch, and the node gone when a list no longer has it', () => {
    const seen: (string | null)[] = [];
    const calls: string[] = [];
    const inner: ReflectorHandler = { beginList: () => calls.push('begin'), listPage: (o) => calls.push(`page ${o.length}`), endList: () => calls.push('end'), event: (t) => calls.push(t) };
    const handler = watchingNode('node-a', inner, (node) => seen.push(node === null ? null : JSON.stringify((node['spec'] as { taints: unknown }).taints)));
    handler.beginList();
    handler.listPage([nodeWith('node-b', [startup]), nodeWith('node-a', [startup])]);
    handler.endList();
    handler.event('MODIFIED', nodeWith('node-b', []));
    handler.event('MODIFIED', nodeWith('node-a', []));
    handler.beginList();
    handler.listPage([nodeWith('node-b', [])]);
    handler.endList();
    assert.deepEqual(seen, [JSON.stringify([startup]), '[]', null]);
    assert.deepEqual(calls, ['begin', 'page 2', 'end', 'MODIFIED', 'MODIFIED', 'begin', 'page 1', 'end']);
  });
});
