/**
 * The dataplane applier against a real kernel firewall, on both iptables backends, each test inside
 * its own throwaway network namespace: what it writes on a first apply, on a small change and on no
 * change; how it repairs every kind of drift; how a restarted process adopts what the last one left;
 * cleanup; failing and flaky iptables-restore; backend detection; drop counters. No traffic is sent.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DataplaneApplier, DataplaneWriteError } from '../../lib/dataplane/applier.js';
import type { ApplyReport } from '../../lib/dataplane/applier.js';
import { cleanup, OWNED_TABLES } from '../../lib/dataplane/cleanup.js';
import type { FindingKind } from '../../lib/dataplane/plan.js';
import type { CommandRunner } from '../../lib/exec.js';
import { canonicalMember, Ipset } from '../../lib/ipset.js';
import { detectBackend } from '../../lib/iptables/backend.js';
import { Iptables, IptablesError } from '../../lib/iptables/iptables.js';
import type { Backend } from '../../lib/iptables/iptables.js';
import type { NetworkNamespace } from '../../lib/netns.js';
import type { RetryPolicy } from '../../lib/retry.js';
import type { Dataplane, EndpointInfo } from '../../rules/dataplane.js';
import { POLICY_TABLE } from '../../rules/dataplane.js';
import { Names } from '../../rules/names.js';
import { renderChainRules, renderIptables } from '../../rules/render.js';
import { ruleHashes } from '../../rules/rule-hash.js';
import { makeSettings } from '../../rules/settings.js';
import { compile, parseObjects } from '../../rules/snapshot.js';
import fc from 'fast-check';
import { collidingVethSuffix, hostileCluster, TEST_BUDGET } from '../support/hostile-cluster.js';
import { namespace, pod, policy, snapshotOf } from '../support/builders.js';
import { FakeBinDir, findOnPath } from '../support/dataplane-fake-bin.js';
import { isIptablesRestore, programName, RecordingRunner } from '../support/dataplane-recording-runner.js';
import type { RecordedCommand } from '../support/dataplane-recording-runner.js';
import { useNetns } from '../support/netns-fixture.js';

const MAIN_JS = path.resolve(fileURLToPath(import.meta.url), '../../../daemon/main.js');
const NAMES = new Names('pal');
const BUILTIN_CHAINS = ['INPUT', 'FORWARD', 'OUTPUT'];

// ---------------------------------------------------------------------------------------------
// The cluster: three local pods (web, db, batch) and one remote (client), three policies.
//   web   is isolated both ways: ingress from app=client (web-in), egress to app=db (web-out)
//   db    is isolated for ingress: from app=web on TCP 5432 (db-in)
//   batch is selected by nothing, so its chains hold no policy
// ---------------------------------------------------------------------------------------------

const IP = { web: '10.1.1.1', db: '10.1.1.2', batch: '10.1.1.3', client: '10.1.9.9' } as const;

/** What a test may change: batch's label (a local pod), client's (a remote one), policies removed. */
interface Changes {
  readonly batch?: string;
  readonly client?: string;
  readonly without?: readonly string[];
}

function clusterObjects(apps: Changes = {}): Record<string, unknown>[] {
  const objects = [
    namespace('ns1', { team: 'a' }),
    pod('ns1', 'web', { ip: IP.web, labels: { app: 'web' } }),
    pod('ns1', 'db', { ip: IP.db, labels: { app: 'db' } }),
    pod('ns1', 'batch', { ip: IP.batch, labels: { app: apps.batch ?? 'batch' } }),
    pod('ns1', 'client', { ip: IP.client, labels: { app: apps.client ?? 'client' }, node: 'node-b' }),
    policy('ns1', 'web-in', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }] }] }),
    policy('ns1', 'db-in', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ protocol: 'TCP', port: 5432 }] }] }),
    policy('ns1', 'web-out', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Egress'], egress: [{ to: [{ podSelector: { matchLabels: { app: 'db' } } }] }] }),
  ];
  return objects.filter((o) => !(o['kind'] === 'NetworkPolicy' && (apps.without ?? []).includes((o['metadata'] as { name: string }).name)));
}

/** Compiled afresh each call, as the daemon would after an event: equal content, new objects. */
function dataplaneOf(changes: Changes = {}): Dataplane {
  const settings = makeSettings({ nodeName: 'node-a' });
  if (!settings.ok) throw new Error(settings.errors.join('; '));
  return compile(snapshotOf(clusterObjects(changes)), settings.settings);
}

const CHAIN = {
  webTo: NAMES.endpoint('to', 'ns1', 'web'),
  batchTo: NAMES.endpoint('to', 'ns1', 'batch'),
  batchFrom: NAMES.endpoint('from', 'ns1', 'batch'),
  webIn: NAMES.policy('ingress', 'ns1', 'web-in'),
} as const;

/** The peer set that holds `ip` in the base state: app=web, app=db or app=client. */
function setHolding(ip: string): string {
  const set = [...dataplaneOf().ipsets.values()].find((s) => s.members.has(ip));
  if (set === undefined) throw new Error(`no set holds ${ip}`);
  return set.name;
}

const SET = { web: setHolding(IP.web), db: setHolding(IP.db), client: setHolding(IP.client) } as const;

// ---------------------------------------------------------------------------------------------
// Driving the namespace
// ---------------------------------------------------------------------------------------------

function applierOver(runner: CommandRunner, backend: Backend): DataplaneApplier {
  return new DataplaneApplier({ iptables: new Iptables({ runner, backend }), ipset: new Ipset({ runner }), names: NAMES });
}

/** Loads `lines` into one table (palisade's unless said) with iptables-restore --noflush, as another program on the node would. */
async function iptablesRestore(ns: NetworkNamespace, backend: Backend, lines: readonly string[], options: { table?: string; counters?: boolean } = {}): Promise<void> {
  const argv = [`iptables-${backend}-restore`, '--noflush', '-w', '5', ...(options.counters === true ? ['-c'] : [])];
  await ns.run(argv, { input: [`*${options.table ?? POLICY_TABLE}`, ...lines, 'COMMIT', ''].join('\n') });
}

/** The rules as a version that kept them in the filter table would have left them. */
function earlierVersionText(dataplane: Dataplane): string {
  return renderIptables(dataplane).replace(/^\*mangle$/m, '*filter');
}

function otherBackend(backend: Backend): Backend {
  return backend === 'nft' ? 'legacy' : 'nft';
}

/** A rule kube-proxy or the CNI might have: palisade's hooks must go above it and leave it alone. */
const FOREIGN_RULES = ['-A FORWARD -m comment --comment foreign -j ACCEPT', '-A INPUT -m comment --comment foreign -j ACCEPT'];

/** The base state applied over foreign rules by an applier that runs its commands through `runner`. */
async function appliedBase(ns: NetworkNamespace, backend: Backend, runner: CommandRunner = ns): Promise<DataplaneApplier> {
  await iptablesRestore(ns, backend, FOREIGN_RULES);
  const applier = applierOver(runner, backend);
  const report = await applier.apply(dataplaneOf());
  assert.ok(report.plan !== null, 'the first apply into an empty namespace writes');
  return applier;
}

// ---------------------------------------------------------------------------------------------
// Reading the kernel back, normalised for comparison
// ---------------------------------------------------------------------------------------------

/** Each chain's rules, in order, as iptables-save prints them without the "-A CHAIN " head. */
type Chains = Record<string, string[]>;
type Sets = Record<string, { type: string; members: string[] }>;

function sortedRecord<T>(record: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function pick<T>(record: Record<string, T>, keep: (name: string) => boolean): Record<string, T> {
  return Object.fromEntries(Object.entries(record).filter(([name]) => keep(name)));
}

async function savedTable(ns: NetworkNamespace, backend: Backend, table: string = POLICY_TABLE): Promise<Chains> {
  const chains: Chains = {};
  for (const line of (await ns.run([`iptables-${backend}-save`, '-t', table])).split('\n')) {
    const declared = /^:(\S+) /.exec(line);
    if (declared !== null) chains[declared[1]!] ??= [];
    const rule = /^-A (\S+) (.*)$/.exec(line);
    if (rule !== null) (chains[rule[1]!] ??= []).push(rule[2]!);
  }
  return sortedRecord(chains);
}

/** Every set with its type and sorted members (the create line's random initval is left out). */
async function ipsets(ns: NetworkNamespace): Promise<Sets> {
  const sets: Sets = {};
  for (const line of (await ns.run(['ipset', 'save'])).split('\n')) {
    const [verb, name = '', ...rest] = line.split(' ');
    if (verb === 'create') sets[name] = { type: rest[0] ?? '', members: [] };
    if (verb === 'add') sets[name]?.members.push(rest.join(' '));
  }
  for (const set of Object.values(sets)) set.members.sort();
  return sortedRecord(sets);
}

interface PalisadeView {
  readonly chains: Chains;
  readonly sets: Sets;
}

/** Palisade's chains and sets, plus the built-in chains its hooks live in (with any foreign rules). */
async function palisadeView(ns: NetworkNamespace, backend: Backend): Promise<PalisadeView> {
  const chains = pick(await savedTable(ns, backend), (name) => NAMES.owns(name) || BUILTIN_CHAINS.includes(name));
  const sets = pick(await ipsets(ns), (name) => NAMES.owns(name));
  return { chains, sets };
}

/** Everything in both backends' tables palisade ever wrote (mangle and filter) and every set. */
async function wholeKernel(ns: NetworkNamespace): Promise<{ legacy: Chains; nft: Chains; sets: Sets }> {
  const tables = async (backend: Backend): Promise<Chains> => {
    const all: Chains = {};
    for (const table of OWNED_TABLES) for (const [name, rules] of Object.entries(await savedTable(ns, backend, table))) all[`${table}/${name}`] = rules;
    return sortedRecord(all);
  };
  return { legacy: await tables('legacy'), nft: await tables('nft'), sets: await ipsets(ns) };
}

/** What a first apply of `desired` leaves: palisade removed from this backend, then applied anew. */
async function freshApplyView(ns: NetworkNamespace, backend: Backend, desired: Dataplane): Promise<PalisadeView> {
  await cleanup({ runner: ns, prefixes: [NAMES.prefix], backends: [backend] });
  await applierOver(ns, backend).apply(desired);
  return palisadeView(ns, backend);
}

/** The hook is rule 1 of the built-in chain, the only jump into palisade, and the foreign rule comes next. */
function assertHookFirst(chains: Chains, builtin: 'FORWARD' | 'INPUT'): void {
  const rules = chains[builtin] ?? [];
  assert.match(rules[0] ?? '(no rules)', new RegExp(`-j ${NAMES.prefix}-${builtin}$`), `rule 1 of ${builtin} should be the hook: ${rules.join(' | ')}`);
  assert.equal(rules.filter((r) => / -[jg] pal-/.test(r)).length, 1, `exactly one jump into palisade in ${builtin}`);
  assert.match(rules[1] ?? '(no rule 2)', /--comment (drift-)?foreign -j ACCEPT$/, `the foreign rule should follow the hook in ${builtin}`);
}

function ruleHashesOf(rules: readonly string[]): (string | null)[] {
  return rules.map((rule) => /--comment "?pal:([A-Za-z0-9_-]{16})/.exec(rule)?.[1] ?? null);
}

function desiredSets(desired: Dataplane): Sets {
  const sets: Sets = {};
  for (const set of desired.ipsets.values()) sets[set.name] = { type: set.type, members: [...set.members].map((m) => canonicalMember(set.type, m)).sort() };
  return sortedRecord(sets);
}

/** The saved text of the rule in `chain` that `matches`, as "-A CHAIN ..." ready to turn into "-D". */
async function savedRule(ns: NetworkNamespace, backend: Backend, chain: string, matches: (rule: string) => boolean): Promise<string> {
  const rule = ((await savedTable(ns, backend))[chain] ?? []).find(matches);
  if (rule === undefined) throw new Error(`no matching rule in ${chain}`);
  return `${chain} ${rule}`;
}

// ---------------------------------------------------------------------------------------------
// Reading what was run
// ---------------------------------------------------------------------------------------------

/** A report of no work: no plan, nothing repaired, nothing pending (other fields, such as timings, ignored). */
function assertNothingDone(report: ApplyReport, message?: string): void {
  const { plan, repaired, pendingDestroy } = report;
  assert.deepEqual({ plan, repaired, pendingDestroy }, { plan: null, repaired: [], pendingDestroy: [] }, message);
}

function linesOf(texts: readonly string[], pattern: RegExp): string[] {
  return texts.flatMap((text) => text.split('\n')).flatMap((line) => {
    const match = pattern.exec(line);
    return match === null ? [] : [match[1] ?? line];
  });
}

/** Chains an iptables-restore input declares (which, with --noflush, flushes them). */
function declaredChains(texts: readonly string[]): string[] {
  return linesOf(texts, /^:(\S+) /);
}

/**
 * Nothing still in use was flushed, deleted or swapped away: no -F/-X/--flush anywhere, a chain
 * declared (and so flushed) only when it is rewritten in the same transaction, no ipset
 * flush/destroy/swap of a set the old or new state uses.
 */
function assertNothingInUseFlushed(commands: readonly RecordedCommand[], inUse: { chains: ReadonlySet<string>; sets: ReadonlySet<string>; rewritten: ReadonlySet<string> }): void {
  for (const command of commands) {
    const shown = `${command.argv.join(' ')}${command.input === undefined ? '' : `\n${command.input}`}`;
    const lines = (command.input ?? '').split('\n');
    if (programName(command).startsWith('iptables')) {
      assert.ok(!command.argv.some((arg) => ['-F', '--flush', '-X', '--delete-chain', '-Z', '--zero'].includes(arg)), `flushing command run: ${shown}`);
      for (const line of lines) {
        assert.doesNotMatch(line, /^(-F|--flush|-Z)\b/, `flush in restore input: ${shown}`);
        const deleted = /^(?:-X|--delete-chain) (\S+)/.exec(line)?.[1];
        if (deleted !== undefined) assert.ok(!inUse.chains.has(deleted), `chain ${deleted} is still desired but was deleted: ${shown}`);
        const declared = /^:(\S+) /.exec(line)?.[1];
        if (declared !== undefined) assert.ok(inUse.rewritten.has(declared), `chain ${declared} was declared (flushed) without being rewritten: ${shown}`);
      }
    }
    if (programName(command) === 'ipset') {
      const verb = command.argv[1] ?? '';
      assert.ok(!(['flush', 'destroy', 'swap'].includes(verb) && command.argv.slice(2).some((name) => inUse.sets.has(name))), `set in use flushed: ${shown}`);
      for (const line of lines) {
        const names = /^(?:flush|destroy|swap) (.*)$/.exec(line)?.[1]?.split(' ') ?? [];
        assert.ok(!names.some((name) => inUse.sets.has(name)), `set in use flushed, destroyed or swapped: ${shown}`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Drift: what someone else does to the firewall, and what refresh() must call it
// ---------------------------------------------------------------------------------------------

interface DriftKit {
  readonly ns: NetworkNamespace;
  readonly backend: Backend;
  iptables(lines: readonly string[]): Promise<void>;
  ipset(argv: readonly string[]): Promise<void>;
  rule(chain: string, matches: (rule: string) => boolean): Promise<string>;
}

interface Drift {
  readonly title: string;
  readonly kinds: readonly FindingKind[];
  make(kit: DriftKit): Promise<void>;
  /** The view after repair, when it legitimately differs from the one before the drift. */
  expectAfter?(before: PalisadeView): PalisadeView;
}

const isHook = (builtin: string) => (rule: string) => rule.endsWith(`-j ${NAMES.prefix}-${builtin}`);

const DRIFTS: readonly Drift[] = [
  {
    title: 'a deleted FORWARD hook',
    kinds: ['hook-missing'],
    make: async (k) => k.iptables([`-D ${await k.rule('FORWARD', isHook('FORWARD'))}`]),
  },
  {
    title: 'a foreign rule inserted above the FORWARD hook',
    kinds: ['hook-moved'],
    make: (k) => k.iptables(['-I FORWARD 1 -m comment --comment drift-foreign -j ACCEPT']),
    // The foreign rule stays; the hook goes back above it.
    expectAfter: (before) => {
      const forward = before.chains['FORWARD'] ?? [];
      return { ...before, chains: { ...before.chains, FORWARD: [forward[0]!, '-m comment --comment drift-foreign -j ACCEPT', ...forward.slice(1)] } };
    },
  },
  {
    title: 'a duplicated FORWARD hook',
    kinds: ['hook-duplicated'],
    make: (k) => k.iptables([`-A FORWARD -j ${NAMES.forward()}`]),
  },
  {
    title: 'a second, comment-less FORWARD hook inserted above the real one',
    kinds: ['hook-duplicated', 'hook-moved'],
    make: (k) => k.iptables([`-I FORWARD 1 -j ${NAMES.forward()}`]),
  },
  {
    title: 'a jump into palisade\'s chains from OUTPUT, where palisade has no hook',
    kinds: ['foreign-jump'],
    make: (k) => k.iptables([`-A OUTPUT -j ${NAMES.allow()}`]),
  },
  {
    title: 'a flushed pod chain',
    kinds: ['chain-modified'],
    make: (k) => k.iptables([`:${CHAIN.webTo} - [0:0]`]),
  },
  {
    title: 'a rule deleted from a pod chain',
    kinds: ['chain-modified'],
    make: async (k) => k.iptables([`-D ${await k.rule(CHAIN.webTo, (rule) => rule.endsWith('-j DROP'))}`]),
  },
  {
    title: 'a foreign rule appended to a pod chain',
    kinds: ['chain-modified'],
    make: (k) => k.iptables([`-A ${CHAIN.webTo} -j ACCEPT`]),
  },
  {
    title: 'an entry chain deleted together with its hook',
    kinds: ['chain-missing', 'hook-missing'],
    make: async (k) => k.iptables([`-D ${await k.rule('INPUT', isHook('INPUT'))}`, `:${NAMES.input()} - [0:0]`, `-X ${NAMES.input()}`]),
  },
  {
    title: 'a stale chain of palisade\'s left over',
    kinds: ['chain-stale'],
    make: (k) => k.iptables([`:${NAMES.prefix}-stale - [0:0]`, `-A ${NAMES.prefix}-stale -j ACCEPT`]),
  },
  {
    title: 'an emptied set',
    kinds: ['set-changed'],
    make: (k) => k.ipset(['flush', SET.client]),
  },
  {
    title: 'a member added to a set by hand',
    kinds: ['set-changed'],
    make: (k) => k.ipset(['add', SET.client, '10.9.9.9']),
  },
  {
    title: 'a stale set of palisade\'s left over',
    kinds: ['set-stale'],
    make: (k) => k.ipset(['create', `${NAMES.prefix}-p-stale`, 'hash:ip']),
  },
];

function countKinds(kinds: readonly FindingKind[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of kinds) counts[kind] = (counts[kind] ?? 0) + 1;
  return sortedRecord(counts);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

const LOCK_MESSAGE = 'Another app is currently holding the xtables lock. Perhaps you want to use the -w option?';

for (const backend of ['nft', 'legacy'] as const) {
  describe(`the dataplane applier in a network namespace, ${backend} backend`, function () {
    // A fresh namespace per test: each starts from empty tables and no sets.
    const ns = useNetns(`paltest-dataplane-${backend}`, { perTest: true });
    const restoreProgram = `iptables-${backend}-restore`;

    describe('applying', function () {
      it('loads every chain and set into an empty namespace and hooks in as rule 1 of FORWARD and INPUT, above a foreign rule', async function () {
        await iptablesRestore(ns(), backend, FOREIGN_RULES);
        const desired = dataplaneOf();
        const report = await applierOver(ns(), backend).apply(desired);

        assert.deepEqual(report.plan?.chainsWritten, [...desired.chains.keys()].sort());
        assert.deepEqual(report.plan?.setsWritten, [...desired.ipsets.keys()].sort());
        assert.deepEqual(report.repaired, []);
        const chains = await savedTable(ns(), backend);
        assert.deepEqual(Object.keys(chains).filter((c) => NAMES.owns(c)), [...desired.chains.keys()].sort());
        for (const chain of desired.chains.values()) {
          assert.deepEqual(ruleHashesOf(chains[chain.name] ?? []), ruleHashes(chain.name, chain.rules), `rules of ${chain.name}`);
        }
        assertHookFirst(chains, 'FORWARD');
        assertHookFirst(chains, 'INPUT');
        assert.deepEqual((await palisadeView(ns(), backend)).sets, desiredSets(desired));
      });

      it('rewrites only the ingress chain of a local pod relabelled into a policy, and adds it to the set of its new label', async function () {
        const recorder = new RecordingRunner(ns());
        const applier = await appliedBase(ns(), backend, recorder);
        recorder.clear();
        const changed = dataplaneOf({ batch: 'db' });
        const report = await applier.apply(changed);

        assert.deepEqual(report.plan?.chainsWritten, [CHAIN.batchTo]);
        assert.deepEqual(report.plan?.chainsDeleted, []);
        assert.deepEqual(report.plan?.setsWritten, [SET.db]);
        assert.deepEqual(report.repaired, []);
        const iptablesTexts = recorder.restoreInputs('iptables');
        assert.equal(iptablesTexts.length, 1, 'one iptables-restore');
        assert.deepEqual(iptablesTexts, [report.plan?.iptables]);
        assert.deepEqual(declaredChains(iptablesTexts), [CHAIN.batchTo], 'no other chain declared (and so flushed)');
        assert.deepEqual([...new Set(linesOf(iptablesTexts, /^-[AIDX] (\S+)/))], [CHAIN.batchTo], 'no rule of another chain or hook touched');
        assert.deepEqual(recorder.restoreInputs('ipset'), [`add ${SET.db} ${IP.batch} -exist\n`]);
        assert.deepEqual(await palisadeView(ns(), backend), await freshApplyView(ns(), backend, changed));
      });

      it('changes only set members, with no iptables-restore at all, when a remote pod is relabelled', async function () {
        const recorder = new RecordingRunner(ns());
        const applier = await appliedBase(ns(), backend, recorder);
        recorder.clear();
        const changed = dataplaneOf({ client: 'other' });
        const report = await applier.apply(changed);

        assert.deepEqual(report.plan?.chainsWritten, []);
        assert.deepEqual(report.plan?.setsWritten, [SET.client]);
        assert.equal(report.plan?.iptables, '');
        assert.deepEqual(recorder.commands.filter(isIptablesRestore), []);
        assert.deepEqual(recorder.restoreInputs('ipset'), [`del ${SET.client} ${IP.client} -exist\n`]);
        assert.deepEqual(await palisadeView(ns(), backend), await freshApplyView(ns(), backend, changed));
      });

      it('deletes the chain of a removed policy and destroys the set only it used, flushing nothing still in use', async function () {
        const recorder = new RecordingRunner(ns());
        const applier = await appliedBase(ns(), backend, recorder);
        recorder.clear();
        const changed = dataplaneOf({ without: ['web-in'] });
        const report = await applier.apply(changed);

        assert.deepEqual(report.plan?.chainsWritten, [CHAIN.webTo]);
        assert.deepEqual(report.plan?.chainsDeleted, [CHAIN.webIn]);
        assert.deepEqual(report.plan?.destroySets, [SET.client]);
        assertNothingInUseFlushed(recorder.commands, {
          chains: new Set(changed.chains.keys()),
          sets: new Set(changed.ipsets.keys()),
          rewritten: new Set([CHAIN.webTo, CHAIN.webIn]),
        });
        // The kernel may hold a set a moment after its last rule is gone; then the next sync destroys it.
        if (report.pendingDestroy.length > 0) await applier.refresh();
        assert.deepEqual(await palisadeView(ns(), backend), await freshApplyView(ns(), backend, changed));
      });

      it('removes a foreign chain\'s jump into a chain it deletes instead of failing every later write', async function () {
        const applier = await appliedBase(ns(), backend);
        const target = NAMES.policy('ingress', 'ns1', 'web-in');
        await iptablesRestore(ns(), backend, [':DEBUG - [0:0]', `-A DEBUG -j ${target}`]);
        const changed = dataplaneOf({ without: ['web-in'] });
        // Written from memory, the delete of the chain fails once; the next apply reads the kernel and gets past it.
        const first = await applier.apply(changed).then(() => null, (error: unknown) => error);
        if (first !== null) {
          assert.ok(first instanceof DataplaneWriteError, String(first));
          await applier.apply(changed);
        }
        const chains = await savedTable(ns(), backend);
        assert.equal(chains[target], undefined, `${target} is gone`);
        assert.deepEqual(chains['DEBUG'], [], 'the foreign chain stays, without the jump');
        assert.deepEqual(await palisadeView(ns(), backend), await freshApplyView(ns(), backend, changed));
      });

      it('writes nothing and returns no plan when the same state is applied again', async function () {
        const recorder = new RecordingRunner(ns());
        const applier = await appliedBase(ns(), backend, recorder);
        const before = await palisadeView(ns(), backend);
        recorder.clear();
        const report = await applier.apply(dataplaneOf());

        assertNothingDone(report);
        assert.deepEqual(recorder.writes(), []);
        assert.deepEqual(await palisadeView(ns(), backend), before);
      });
    });

    describe('what a hostile tenant writes', function () {
      // Clusters from the attacker generator, each applied through the applier as the daemon does: every
      // one loads, and what is read back matches what was written (comments cut within 255 bytes, so
      // neither backend shortens them behind palisade's back), so a full refresh finds no drift.
      const clusters = fc.sample(hostileCluster, { numRuns: 8, seed: 20261203 });
      clusters.forEach((cluster, i) => {
        it(`loads attacker cluster ${i + 1} of ${clusters.length} (${cluster.attacker.length} attacker objects) and reads it back without drift`, async function () {
          const settings = makeSettings({ nodeName: 'node-a', policyBudget: TEST_BUDGET });
          assert.ok(settings.ok);
          const snapshot = parseObjects([...cluster.victim, ...cluster.attacker].map((object) => ({ object })), TEST_BUDGET).snapshot;
          const desired = compile(snapshot, settings.settings, { vethSuffix: collidingVethSuffix });
          const applier = applierOver(ns(), backend);
          await applier.applyAndCheck(desired);
          const report = await applier.refresh({ full: true });
          assert.deepEqual(report.repaired, []);
          assert.deepEqual((await palisadeView(ns(), backend)).sets, desiredSets(desired));
        });
      });
    });

    describe('repairing drift', function () {
      for (const drift of DRIFTS) {
        it(`repairs ${drift.title}: refresh reports ${drift.kinds.join(' and ')}, restores the rules, counts the repair, then finds nothing`, async function () {
          const applier = await appliedBase(ns(), backend);
          const before = await palisadeView(ns(), backend);
          assert.deepEqual(Object.fromEntries(applier.repairCounts()), {}, 'nothing repaired yet');
          await drift.make({
            ns: ns(),
            backend,
            iptables: (lines) => iptablesRestore(ns(), backend, lines),
            ipset: async (argv) => void (await ns().run(['ipset', ...argv])),
            rule: (chain, matches) => savedRule(ns(), backend, chain, matches),
          });
          assert.notDeepEqual(await palisadeView(ns(), backend), before, 'the drift changed something');

          const report = await applier.refresh();
          assert.deepEqual(report.repaired.map((f) => f.kind).sort(), [...drift.kinds].sort(), report.repaired.map((f) => f.detail).join('; '));
          const after = await palisadeView(ns(), backend);
          assert.deepEqual(after, drift.expectAfter?.(before) ?? before);
          assertHookFirst(after.chains, 'FORWARD');
          assertHookFirst(after.chains, 'INPUT');
          assert.deepEqual(Object.fromEntries(applier.repairCounts()), countKinds(drift.kinds));

          assertNothingDone(await applier.refresh(), 'a second refresh finds nothing');
          assert.deepEqual(Object.fromEntries(applier.repairCounts()), countKinds(drift.kinds));
        });
      }
    });

    describe('restarting', function () {
      it('a new applier over the state a previous process left writes nothing for the same state', async function () {
        await appliedBase(ns(), backend);
        const before = await palisadeView(ns(), backend);
        const recorder = new RecordingRunner(ns());
        const report = await applierOver(recorder, backend).apply(dataplaneOf());

        assertNothingDone(report);
        assert.ok(recorder.commands.length > 0, 'it read the kernel');
        assert.deepEqual(recorder.writes(), []);
        assert.deepEqual(await palisadeView(ns(), backend), before);
      });

      it('a new applier writes only the difference for a changed state, never flushing or deleting anything still in use', async function () {
        await appliedBase(ns(), backend);
        const recorder = new RecordingRunner(ns());
        const restarted = applierOver(recorder, backend);
        const base = dataplaneOf();
        assert.equal((await restarted.apply(base)).plan, null);
        const changed = dataplaneOf({ batch: 'web', client: 'other' });
        const report = await restarted.apply(changed);

        const written = [CHAIN.batchFrom, CHAIN.batchTo].sort();
        assert.deepEqual(report.plan?.chainsWritten, written);
        assert.deepEqual(report.plan?.chainsDeleted, []);
        assert.deepEqual(report.plan?.setsWritten, [SET.client, SET.web].sort());
        assert.deepEqual(declaredChains(recorder.restoreInputs('iptables')), written);
        assertNothingInUseFlushed(recorder.commands, {
          chains: new Set([...base.chains.keys(), ...changed.chains.keys()]),
          sets: new Set([...base.ipsets.keys(), ...changed.ipsets.keys()]),
          rewritten: new Set(written),
        });
        assert.deepEqual(await palisadeView(ns(), backend), await freshApplyView(ns(), backend, changed));
      });
    });

    describe('cleanup', function () {
      /** Foreign objects in both backends and ipset, then palisade applied in both backends over them. */
      async function foreignThenPalisade(): Promise<{ foreign: Awaited<ReturnType<typeof wholeKernel>>; desired: Dataplane }> {
        for (const b of [backend, otherBackend(backend)]) {
          for (const table of OWNED_TABLES) await iptablesRestore(ns(), b, [':KUBE-FOO - [0:0]', '-A KUBE-FOO -m comment --comment foreign -j RETURN', '-A FORWARD -j KUBE-FOO', ...FOREIGN_RULES], { table });
        }
        await ns().run(['ipset', 'create', 'foreign-set', 'hash:ip']);
        await ns().run(['ipset', 'add', 'foreign-set', '10.9.9.9']);
        const foreign = await wholeKernel(ns());
        const desired = dataplaneOf();
        for (const b of [backend, otherBackend(backend)]) await applierOver(ns(), b).apply(desired);
        // And what an earlier version kept in the filter table, as it left it.
        await ns().run([`iptables-${backend}-restore`, '--noflush', '-w', '5'], { input: earlierVersionText(desired) });
        for (const b of ['legacy', 'nft'] as const) assert.ok(Object.keys(await savedTable(ns(), b)).some((c) => NAMES.owns(c)), `palisade applied in ${b}`);
        return { foreign, desired };
      }

      async function assertOnlyForeignLeft(foreign: Awaited<ReturnType<typeof wholeKernel>>): Promise<void> {
        const left = await wholeKernel(ns());
        const named = [...Object.keys(left.legacy), ...Object.keys(left.nft), ...Object.keys(left.sets)].filter((n) => /(^|\/)pal/.test(n));
        assert.deepEqual(named, [], 'nothing named pal* is left');
        assert.deepEqual(left, foreign, 'every foreign chain, rule and set is as it was');
      }

      it('cleanup() removes every hook, chain and set of palisade from both backends and both tables, keeps every foreign object, and a second run removes nothing', async function () {
        const { foreign, desired } = await foreignThenPalisade();
        const chains = [...desired.chains.keys()].sort();
        const report = await cleanup({ runner: ns(), prefixes: ['pal'] });
        const earlier = (b: Backend) => (b === backend ? { hooksRemoved: 2, chainsRemoved: chains } : { hooksRemoved: 0, chainsRemoved: [] });
        assert.deepEqual(report, {
          backends: (['legacy', 'nft'] as const).flatMap((b) => [{ backend: b, table: 'mangle', hooksRemoved: 2, chainsRemoved: chains }, { backend: b, table: 'filter', ...earlier(b) }]),
          setsRemoved: [...desired.ipsets.keys()].sort(),
          setsInUse: [],
        });
        await assertOnlyForeignLeft(foreign);

        const again = await cleanup({ runner: ns(), prefixes: ['pal'] });
        assert.deepEqual(again, { backends: (['legacy', 'nft'] as const).flatMap((b) => OWNED_TABLES.map((table) => ({ backend: b, table, hooksRemoved: 0, chainsRemoved: [] }))), setsRemoved: [], setsInUse: [] });
        await assertOnlyForeignLeft(foreign);
      });

      it('palisade cleanup, run inside the namespace, does the same and says so, and a second run removes 0', async function () {
        const { foreign, desired } = await foreignThenPalisade();
        const cli = () => ns().exec([process.execPath, MAIN_JS, 'cleanup']);
        const first = await cli();
        assert.equal(first.code, 0, first.stderr);
        const chains = desired.chains.size;
        const earlier = (b: Backend) => (b === backend ? `2 hook rules and ${chains} chains` : '0 hook rules and 0 chains');
        assert.equal(first.stdout, `legacy mangle: removed 2 hook rules and ${chains} chains\nlegacy filter: removed ${earlier('legacy')}\nnft mangle: removed 2 hook rules and ${chains} chains\nnft filter: removed ${earlier('nft')}\nipset: removed ${desired.ipsets.size} sets\n`);
        await assertOnlyForeignLeft(foreign);

        const second = await cli();
        assert.equal(second.code, 0, second.stderr);
        assert.equal(second.stdout, 'legacy mangle: removed 0 hook rules and 0 chains\nlegacy filter: removed 0 hook rules and 0 chains\nnft mangle: removed 0 hook rules and 0 chains\nnft filter: removed 0 hook rules and 0 chains\nipset: removed 0 sets\n');
        await assertOnlyForeignLeft(foreign);
      });
    });

    describe('upgrade from a version that kept its rules in the filter table', function () {
      it('takes over in mangle first, then removes the earlier chains and hooks from filter, leaving foreign rules there alone', async function () {
        const older = dataplaneOf({ batch: 'db', client: 'other' });
        await iptablesRestore(ns(), backend, FOREIGN_RULES, { table: 'filter' });
        for (const set of older.ipsets.values()) {
          await ns().run(['ipset', 'create', set.name, set.type, '-exist']);
          for (const member of set.members) await ns().run(['ipset', 'add', set.name, member, '-exist']);
        }
        await ns().run([`iptables-${backend}-restore`, '--noflush', '-w', '5'], { input: earlierVersionText(older) });
        const filterBefore = await savedTable(ns(), backend, 'filter');
        assert.ok(Object.keys(filterBefore).some((c) => NAMES.owns(c)), 'the earlier version\'s chains are there');
        const recorder = new RecordingRunner(ns());
        const applier = applierOver(recorder, backend);
        await applier.apply(dataplaneOf());
        const restores = recorder.commands.filter(isIptablesRestore).map((c) => (c.input ?? '').split('\n')[0]);
        assert.deepEqual(restores, ['*mangle', '*filter'], 'mangle is written before filter is emptied');
        const filterAfter = await savedTable(ns(), backend, 'filter');
        assert.deepEqual(Object.keys(filterAfter).filter((c) => NAMES.owns(c)), []);
        assert.deepEqual(filterAfter['FORWARD'], ['-m comment --comment foreign -j ACCEPT']);
        assert.deepEqual(await palisadeView(ns(), backend), await freshApplyView(ns(), backend, dataplaneOf()));
        // The next applies look at filter no more.
        recorder.clear();
        await applier.apply(dataplaneOf({ batch: 'db' }));
        assert.ok(recorder.commands.every((c) => !c.argv.includes('filter')), 'filter is read once, at the first apply');
      });
    });

    describe('failures', function () {
      it(`leaves the old state enforced when ${restoreProgram} fails, gives the sets their members back, and succeeds once it works again`, async function () {
        const recorder = new RecordingRunner(ns());
        const applier = await appliedBase(ns(), backend, recorder);
        const before = await palisadeView(ns(), backend);
        // B removes the remote client from its set (before the rules change) and rewrites batch's chain.
        const changed = dataplaneOf({ batch: 'db', client: 'other' });
        recorder.clear();

        const fake = await FakeBinDir.create();
        try {
          await fake.failing(restoreProgram, 'iptables-restore: line 3 failed', 1);
          await fake.onPath(() => assert.rejects(applier.apply(changed), (error: unknown) => {
            assert.ok(error instanceof DataplaneWriteError, String(error));
            assert.equal(error.code, 'DATAPLANE_WRITE_FAILED');
            assert.match(error.message, new RegExp(`^${restoreProgram} of 1 chains failed; the previous rules stay in force: ${restoreProgram} --noflush -w 5 \\(network namespace ${ns().name}\\) failed with exit code 1: iptables-restore: line 3 failed`));
            assert.ok(error.cause instanceof IptablesError);
            assert.equal(error.cause.stderr, 'iptables-restore: line 3 failed\n');
            return true;
          }));
        } finally {
          await fake.remove();
        }
        // What ran: the member removal, the failed restore, and the rollback putting the member back.
        assert.deepEqual(recorder.writes().map((c) => [programName(c), c.input]), [
          ['ipset', `del ${SET.client} ${IP.client} -exist\n`],
          [restoreProgram, recorder.restoreInputs('iptables')[0]],
          ['ipset', `add ${SET.client} ${IP.client} -exist\n`],
        ]);
        assert.deepEqual(await palisadeView(ns(), backend), before, 'state A is still in force, set members included');

        const report = await applier.apply(changed);
        assert.deepEqual(report.plan?.chainsWritten, [CHAIN.batchTo], 'the retry re-read the kernel and wrote what was missing');
        assert.deepEqual(await palisadeView(ns(), backend), await freshApplyView(ns(), backend, changed));
      });

      it('names the command, its stderr and the rejected line when the kernel rejects a rule', async function () {
        const iptables = new Iptables({ runner: ns(), backend });
        const rule = '-A pal-x -m set --match-set pal-p-nosuch src -j ACCEPT';
        const text = [`*${POLICY_TABLE}`, ':pal-x - [0:0]', rule, 'COMMIT', ''].join('\n');
        await assert.rejects(iptables.restore(text), (error: unknown) => {
          assert.ok(error instanceof IptablesError, String(error));
          assert.equal(error.code, 'IPTABLES_RESTORE_FAILED');
          assert.notEqual(error.exitCode, 0);
          assert.ok(error.message.startsWith(`${restoreProgram} --noflush -w 5 (network namespace ${ns().name}) failed with exit code ${error.exitCode}: `), error.message);
          assert.match(error.message, /Set pal-p-nosuch doesn't exist/);
          assert.match(error.message, /Error occurred at line: 3/);
          assert.ok(error.message.includes(`\n> 3: ${rule}`), error.message);
          return true;
        });
        assert.equal((await savedTable(ns(), backend))['pal-x'], undefined, 'nothing of the rejected transaction was loaded');
      });

      it(`retries ${restoreProgram} while another program holds the xtables lock, with growing delays, and succeeds`, async function () {
        const real = await findOnPath(restoreProgram);
        const delays: number[] = [];
        const retry: RetryPolicy = { attempts: 4, baseDelayMs: 100, maxDelayMs: 2000, sleep: async (ms) => void delays.push(ms) };
        const fake = await FakeBinDir.create();
        try {
          await fake.flaky(restoreProgram, { failures: 2, stderrLine: LOCK_MESSAGE, exitCode: 4, realProgram: real });
          await fake.onPath(() => new Iptables({ runner: ns(), backend, retry }).restore(`*${POLICY_TABLE}\n:pal-x - [0:0]\n-A pal-x -j RETURN\nCOMMIT\n`));
          assert.equal(await fake.calls(restoreProgram), 3, 'two lock failures, then the real program');
        } finally {
          await fake.remove();
        }
        assert.deepEqual(delays, [100, 200]);
        assert.ok(delays[1]! > delays[0]!, 'the delay grows');
        assert.deepEqual((await savedTable(ns(), backend))['pal-x'], ['-j RETURN']);
      });

      it(`gives up after the configured attempts when ${restoreProgram} keeps reporting the xtables lock`, async function () {
        const delays: number[] = [];
        const retry: RetryPolicy = { attempts: 4, baseDelayMs: 100, maxDelayMs: 300, sleep: async (ms) => void delays.push(ms) };
        const fake = await FakeBinDir.create();
        try {
          await fake.flaky(restoreProgram, { failures: 100, stderrLine: LOCK_MESSAGE, exitCode: 4, realProgram: '/bin/false' });
          await fake.onPath(() => assert.rejects(new Iptables({ runner: ns(), backend, retry }).restore(`*${POLICY_TABLE}\nCOMMIT\n`), (error: unknown) => {
            assert.ok(error instanceof IptablesError, String(error));
            assert.equal(error.exitCode, 4);
            assert.match(error.message, /xtables lock/);
            return true;
          }));
          assert.equal(await fake.calls(restoreProgram), 4);
        } finally {
          await fake.remove();
        }
        assert.deepEqual(delays, [100, 200, 300], 'doubling, capped at maxDelayMs');
      });
    });

    describe('backend detection', function () {
      const other = otherBackend(backend);

      it('falls back to the system default in an empty namespace, and says so', async function () {
        const decision = await detectBackend(ns(), 'auto');
        assert.match(decision.reason, /no rules decide it \(legacy 0, nft 0\); using the system default, (nft|legacy)$/);
        assert.ok(decision.reason.endsWith(`, ${decision.backend}`), decision.reason);
      });

      it(`picks ${backend} when only ${backend} holds rules`, async function () {
        await iptablesRestore(ns(), backend, FOREIGN_RULES);
        const decision = await detectBackend(ns(), 'auto');
        assert.equal(decision.backend, backend, decision.reason);
        assert.match(decision.reason, /hold the most rules/);
      });

      it(`picks ${backend} from kube-proxy's KUBE-IPTABLES-HINT chain in its mangle table even when ${other} holds more rules`, async function () {
        await iptablesRestore(ns(), backend, [':KUBE-IPTABLES-HINT - [0:0]'], { table: 'mangle' });
        await iptablesRestore(ns(), other, [...FOREIGN_RULES, '-A OUTPUT -j ACCEPT']);
        const decision = await detectBackend(ns(), 'auto');
        assert.equal(decision.backend, backend, decision.reason);
        assert.match(decision.reason, new RegExp(`KUBE-IPTABLES-HINT found in the ${backend} tables`));
      });

      it(`honours a forced choice of ${backend} even when only ${other} holds rules`, async function () {
        await iptablesRestore(ns(), other, FOREIGN_RULES);
        assert.deepEqual(await detectBackend(ns(), backend), { backend, reason: `forced by configuration (${backend})` });
      });
    });

    describe('drop counters', function () {
      it('reads zero counters for isolated directions, null for the others, and the counters the kernel holds, drop-log rules included', async function () {
        const applier = await appliedBase(ns(), backend);
        const zero = { packets: 0, bytes: 0 };
        const log = (e: EndpointInfo | undefined, side: 'to' | 'from', reached: number, logged: number) => ({ chain: side === 'to' ? e!.toChain : e!.fromChain, reached, logged });
        const endpoints = new Map(dataplaneOf().endpoints.map((e) => [e.name, e]));
        assert.deepEqual(await applier.readDropCounters(), [
          { namespace: 'ns1', name: 'batch', ingress: null, egress: null, ingressLog: null, egressLog: null },
          { namespace: 'ns1', name: 'db', ingress: zero, egress: null, ingressLog: log(endpoints.get('db'), 'to', 0, 0), egressLog: null },
          { namespace: 'ns1', name: 'web', ingress: zero, egress: zero, ingressLog: log(endpoints.get('web'), 'to', 0, 0), egressLog: log(endpoints.get('web'), 'from', 0, 0) },
        ]);

        // Reload web's ingress chain with counters on its log and drop rules, as if 7 packets had been
        // dropped and the rate limits had let 3 of them be logged.
        const chain = dataplaneOf().chains.get(CHAIN.webTo);
        assert.ok(chain !== undefined);
        const rules = renderChainRules(chain);
        await iptablesRestore(ns(), backend, [`:${chain.name} - [0:0]`, ...rules.slice(0, -2), `[3:180] ${rules.at(-2)!}`, `[7:420] ${rules.at(-1)!}`], { counters: true });
        const web = (await applier.readDropCounters()).find((c) => c.name === 'web');
        assert.deepEqual(web, { namespace: 'ns1', name: 'web', ingress: { packets: 7, bytes: 420 }, egress: zero, ingressLog: log(endpoints.get('web'), 'to', 7, 3), egressLog: log(endpoints.get('web'), 'from', 0, 0) });
        assertNothingDone(await applier.refresh(), 'the reloaded chain is the same chain');
      });
    });
  });
}
