/**
 * The compiler's restore text loads into a real kernel: ipset restore, then iptables-restore --test,
 * then a real iptables-restore --noflush, on both iptables backends (nf_tables and legacy x_tables),
 * each inside a throwaway network namespace. The unit tests check what the rules mean; these check
 * that the kernel accepts them as written.
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadManifests } from '../../lib/manifests.js';
import type { NetworkNamespace } from '../../lib/netns.js';
import { PalisadeError } from '../../lib/errors.js';
import type { Dataplane, IpSet } from '../../rules/dataplane.js';
import { formatProblem } from '../../rules/problems.js';
import { renderChains, renderIpsets, renderIptables } from '../../rules/render.js';
import { makeSettings } from '../../rules/settings.js';
import { compile, parseObjects } from '../../rules/snapshot.js';
import type { SourcedObject } from '../../rules/snapshot.js';
import { useNetns } from '../support/netns-fixture.js';

const REPO_ROOT = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const EXAMPLES_DIR = path.join(REPO_ROOT, 'manifests', 'examples');
/** The seed's examples; a test below fails if the directory gains or loses one, so the list stays honest. */
const EXAMPLE_FILES: readonly string[] = ['admin-deny-busybox2.yaml', 'allow-all.yaml', 'allow-in-from-out.yaml', 'allow-out-to-in.yaml', 'baseline-isolate-namespace.yaml', 'deny-all.yaml', 'isolate-namespace.yaml'];
const NODE = 'node-a';
/** Every iptables-restore waits up to 5 s for the xtables lock instead of failing at once. */
const LOCK_WAIT = ['-w', '5'];

interface Backend {
  readonly name: 'nft' | 'legacy';
  readonly restore: string;
  readonly save: string;
}

const BACKENDS: readonly Backend[] = [
  { name: 'nft', restore: 'iptables-nft-restore', save: 'iptables-nft-save' },
  { name: 'legacy', restore: 'iptables-legacy-restore', save: 'iptables-legacy-save' },
];

// ---------------------------------------------------------------------------------------------
// Cluster objects
// ---------------------------------------------------------------------------------------------

type K8sObject = Record<string, unknown>;

interface ContainerPort {
  readonly name: string;
  readonly containerPort: number;
  readonly protocol: 'TCP' | 'UDP' | 'SCTP';
}

function podObject(namespace: string, name: string, ip: string, labels: Record<string, string>, nodeName: string, ports: readonly ContainerPort[]): K8sObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { namespace, name, labels },
    spec: { nodeName, containers: [{ name: 'main', image: 'busybox', ports }] },
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
  };
}

function namespaceObject(name: string, labels: Record<string, string>): K8sObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

function policyObject(namespace: string, name: string, spec: K8sObject): K8sObject {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace, name }, spec };
}

/** The two pods the example policies are written for (see their comments), both on this node. */
const EXAMPLE_CLUSTER: readonly K8sObject[] = [
  namespaceObject('default', { nsname: 'default' }),
  podObject('default', 'busybox1', '10.0.0.11', { name: 'in', run: 'busybox1' }, NODE, [{ name: 'http', containerPort: 8080, protocol: 'TCP' }]),
  podObject('default', 'busybox2', '10.0.0.12', { name: 'out', run: 'busybox2' }, NODE, [{ name: 'http', containerPort: 8080, protocol: 'TCP' }]),
];

const NAMESPACES = [
  { name: 'alpha', labels: { team: 'a', env: 'prod' } },
  { name: 'beta', labels: { team: 'b', env: 'staging' } },
  { name: 'gamma', labels: { team: 'c', env: 'prod' } },
] as const;

const LOCAL_PODS = 50;
const REMOTE_PODS = 200;
const POLICIES = 40;

function at<T>(list: readonly T[], i: number): T {
  return list[i % list.length]!;
}

/** Named ports whose numbers differ from pod to pod, in all three protocols. */
function generatedPorts(i: number): ContainerPort[] {
  const ports: ContainerPort[] = [
    { name: 'http', containerPort: i % 2 === 0 ? 8080 : 8081, protocol: 'TCP' },
    { name: 'dns', containerPort: i % 3 === 0 ? 5353 : 53, protocol: 'UDP' },
    { name: 'diameter', containerPort: 3868, protocol: 'SCTP' },
  ];
  if (i % 4 === 0) ports.push({ name: 'metrics', containerPort: 9100 + (i % 5), protocol: 'TCP' });
  return ports;
}

function generatedPods(): K8sObject[] {
  const pods: K8sObject[] = [];
  for (let i = 0; i < LOCAL_PODS + REMOTE_PODS; i++) {
    const local = i < LOCAL_PODS;
    const labels = { app: `app${i % 7}`, tier: at(['web', 'api', 'db'], Math.floor(i / 3)), ...(i % 5 === 0 ? { canary: 'true' } : {}) };
    const node = local ? NODE : at(['node-b', 'node-c', 'node-d'], i);
    pods.push(podObject(at(NAMESPACES, i).name, `pod-${i}`, `10.1.${Math.floor(i / 100)}.${(i % 100) + 2}`, labels, node, generatedPorts(i)));
  }
  return pods;
}

/** 20 single TCP ports: more than one multiport rule holds (15 slots). */
const MANY_TCP_PORTS = Array.from({ length: 20 }, (_, k) => ({ protocol: 'TCP', port: 1000 + k }));
/** 10 UDP ranges (two slots each) and 5 single ports: 25 slots, two multiport rules with ranges. */
const MANY_UDP_PORTS = [
  ...Array.from({ length: 10 }, (_, k) => ({ protocol: 'UDP', port: 2000 + 10 * k, endPort: 2005 + 10 * k })),
  ...Array.from({ length: 5 }, (_, k) => ({ protocol: 'UDP', port: 3000 + k })),
];

/** One of eight policy shapes, so 40 policies mix every peer and port form the compiler renders. */
function generatedPolicySpec(p: number): K8sObject {
  const podSelector = p % 5 === 0 ? {} : { matchLabels: { app: `app${p % 7}` } };
  switch (p % 8) {
    case 0:
      return { podSelector, ingress: [{ from: [{ podSelector: { matchLabels: { tier: 'web' } } }], ports: [...MANY_TCP_PORTS, { protocol: 'UDP', port: 53 }] }] };
    case 1:
      return {
        podSelector,
        policyTypes: ['Egress'],
        egress: [{
          to: [{ namespaceSelector: { matchLabels: { env: 'prod' } }, podSelector: { matchExpressions: [{ key: 'tier', operator: 'In', values: ['web', 'api'] }] } }],
          ports: [{ protocol: 'TCP', port: 'http' }, { protocol: 'UDP', port: 'dns' }, { protocol: 'SCTP', port: 'diameter' }],
        }],
      };
    case 2:
      return {
        podSelector,
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.0.0.0/8', '169.254.169.254/32'] } }], ports: [{ protocol: 'TCP', port: 443 }, { protocol: 'TCP', port: 8000, endPort: 8999 }] }],
      };
    case 3:
      return {
        podSelector,
        ingress: [{
          from: [{ ipBlock: { cidr: '172.16.0.0/12', except: ['172.16.5.0/24', '172.20.0.0/16'] } }, { podSelector: { matchLabels: { canary: 'true' } } }],
          ports: [{ protocol: 'SCTP', port: 3868 }, { protocol: 'SCTP', port: 4000, endPort: 4010 }],
        }],
      };
    case 4:
      return {
        podSelector,
        policyTypes: ['Ingress', 'Egress'],
        ingress: [{ from: [{ namespaceSelector: {} }] }],
        egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['0.0.0.0/1'] } }] }, { to: [{ namespaceSelector: { matchLabels: { team: 'b' } } }] }],
      };
    case 5:
      return { podSelector, policyTypes: ['Ingress', 'Egress'], ingress: [{}] };
    case 6:
      return {
        podSelector: { matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['db'] }, { key: 'app', operator: 'Exists' }] },
        ingress: [{
          from: [{ podSelector: { matchExpressions: [{ key: 'canary', operator: 'DoesNotExist' }] }, namespaceSelector: { matchExpressions: [{ key: 'team', operator: 'In', values: ['a', 'c'] }] } }],
          ports: MANY_UDP_PORTS,
        }],
      };
    default:
      return { podSelector, ingress: [{ ports: [{ protocol: 'TCP' }, { protocol: 'TCP', port: 'metrics' }, { protocol: 'SCTP', port: 'diameter' }] }] };
  }
}

function generatedCluster(): K8sObject[] {
  const policies = Array.from({ length: POLICIES }, (_, p) => policyObject(at(NAMESPACES, p).name, `gen-${p}`, generatedPolicySpec(p)));
  return [...NAMESPACES.map((ns) => namespaceObject(ns.name, ns.labels)), ...generatedPods(), ...policies];
}

// ---------------------------------------------------------------------------------------------
// Compiling and loading
// ---------------------------------------------------------------------------------------------

function compileObjects(objects: Iterable<SourcedObject>): Dataplane {
  const { snapshot, problems } = parseObjects(objects);
  assert.deepEqual(problems.map(formatProblem), [], 'the test cluster should parse without problems');
  const settings = makeSettings({ nodeName: NODE });
  assert.ok(settings.ok, settings.ok ? '' : settings.errors.join('; '));
  return compile(snapshot, settings.settings);
}

function fromObjects(objects: readonly K8sObject[]): SourcedObject[] {
  return objects.map((object) => ({ object }));
}

async function exampleObjects(files: readonly string[]): Promise<SourcedObject[]> {
  const loaded = await loadManifests(files.map((f) => path.join(EXAMPLES_DIR, f)));
  return loaded.map(({ object, source }) => ({ object, origin: `${source.file}:${source.line}` }));
}

/**
 * Runs a restore with `text` on stdin. When the kernel or the tool rejects it, the error names the
 * rejected line's text too, not only its number, so a failure reads as "this rule, this reason".
 */
async function restore(netns: NetworkNamespace, argv: readonly string[], text: string): Promise<void> {
  const result = await netns.exec(argv, { input: text });
  if (result.code === 0) return;
  const lineNumber = /line:? (\d+)/i.exec(result.stderr)?.[1];
  const line = lineNumber === undefined ? undefined : text.split('\n')[Number(lineNumber) - 1];
  assert.fail(`${argv.join(' ')} exited with ${result.code}: ${result.stderr.trim()}${line === undefined ? '' : `\n  rejected line ${lineNumber}: ${line}`}`);
}

async function loadIpsets(netns: NetworkNamespace, dataplane: Dataplane): Promise<void> {
  await restore(netns, ['ipset', 'restore'], renderIpsets(dataplane.ipsets.values()));
}

async function loadIptables(netns: NetworkNamespace, backend: Backend, text: string): Promise<void> {
  await restore(netns, [backend.restore, ...LOCK_WAIT, '--test', '--noflush'], text);
  await restore(netns, [backend.restore, ...LOCK_WAIT, '--noflush'], text);
}

/** A rule kube-proxy or the CNI might already have in FORWARD and INPUT: palisade's hooks must go above it. */
const PRE_EXISTING = ['*mangle', '-A FORWARD -m comment --comment pre-existing -j ACCEPT', '-A INPUT -m comment --comment pre-existing -j ACCEPT', 'COMMIT', ''].join('\n');

interface SavedFilter {
  /** Chains declared in palisade's table. */
  readonly chains: ReadonlySet<string>;
  /** `-A` lines per chain, in order, without the `-A NAME ` head. */
  readonly rules: ReadonlyMap<string, readonly string[]>;
}

async function saveFilter(netns: NetworkNamespace, backend: Backend): Promise<SavedFilter> {
  const text = await netns.run([backend.save, '-t', 'mangle']);
  const chains = new Set<string>();
  const rules = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const declared = /^:(\S+) /.exec(line);
    if (declared !== null) chains.add(declared[1]!);
    const appended = /^-A (\S+) (.*)$/.exec(line);
    if (appended !== null) {
      const list = rules.get(appended[1]!) ?? [];
      list.push(appended[2]!);
      rules.set(appended[1]!, list);
    }
  }
  return { chains, rules };
}

async function savedSetSizes(netns: NetworkNamespace): Promise<Map<string, number>> {
  const sizes = new Map<string, number>();
  for (const line of (await netns.run(['ipset', 'save'])).split('\n')) {
    const created = /^create (\S+) /.exec(line);
    if (created !== null) sizes.set(created[1]!, sizes.get(created[1]!) ?? 0);
    const added = /^add (\S+) /.exec(line);
    if (added !== null) sizes.set(added[1]!, (sizes.get(added[1]!) ?? 0) + 1);
  }
  return sizes;
}

/** The kernel holds exactly the dataplane's sets, with as many members (nomatch entries included). */
async function assertSetsLoaded(netns: NetworkNamespace, dataplane: Dataplane): Promise<void> {
  const expected = new Map([...dataplane.ipsets.values()].map((s: IpSet) => [s.name, s.members.size]));
  assert.deepEqual(await savedSetSizes(netns), expected);
}

function palisadeChains(saved: SavedFilter): string[] {
  return [...saved.chains].filter((c) => c.startsWith('pal-')).sort();
}

/** Every dataplane chain is there, nothing else of ours is, and each holds as many rules as compiled. */
function assertChainsLoaded(saved: SavedFilter, dataplane: Dataplane): void {
  assert.deepEqual(palisadeChains(saved), [...dataplane.chains.keys()].sort());
  const expected = new Map([...dataplane.chains.values()].map((c) => [c.name, c.rules.length]));
  const actual = new Map(palisadeChains(saved).map((c) => [c, saved.rules.get(c)?.length ?? 0]));
  assert.deepEqual(actual, expected);
}

function assertHookedFirst(saved: SavedFilter, builtin: 'FORWARD' | 'INPUT', target: string): void {
  const rules = saved.rules.get(builtin) ?? [];
  assert.match(rules[0] ?? '(no rules)', new RegExp(`-j ${target}$`), `first -A ${builtin} rule should jump to ${target}: ${rules.join(' | ')}`);
  assert.match(rules[1] ?? '(no second rule)', /pre-existing/, `the pre-existing ${builtin} rule should follow the hook`);
  assert.equal(rules.filter((r) => r.includes(target)).length, 1, `exactly one ${builtin} hook`);
}

function ruleCount(dataplane: Dataplane): number {
  return [...dataplane.chains.values()].reduce((n, c) => n + c.rules.length, 0);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

describe('restore text in a real kernel (network namespace)', function () {
  it('covers every example policy in manifests/examples', async function () {
    const files = (await readdir(EXAMPLES_DIR)).filter((f) => /\.(ya?ml|json)$/.test(f)).sort();
    assert.deepEqual(files, [...EXAMPLE_FILES]);
  });

  for (const backend of BACKENDS) {
    describe(`with the ${backend.name} iptables backend`, function () {
      // A fresh namespace per test: each starts from an empty mangle table and no sets.
      const netns = useNetns(`paltest-restore-${backend.name}`, { perTest: true });

      const cases = [...EXAMPLE_FILES.map((f) => ({ title: f, files: [f] })), { title: 'every example together', files: EXAMPLE_FILES }];
      for (const { title, files } of cases) {
        it(`loads ${title} with two local pods and hooks it in at position 1 of FORWARD and INPUT`, async function () {
          const policies = await exampleObjects(files);
          assert.ok(policies.length > 0);
          const dataplane = compileObjects([...fromObjects(EXAMPLE_CLUSTER), ...policies]);
          assert.equal(dataplane.endpoints.length, 2);

          await restore(netns(), [backend.restore, ...LOCK_WAIT, '--noflush'], PRE_EXISTING);
          await loadIpsets(netns(), dataplane);
          await assertSetsLoaded(netns(), dataplane);
          await loadIptables(netns(), backend, renderIptables(dataplane));

          const saved = await saveFilter(netns(), backend);
          assertChainsLoaded(saved, dataplane);
          assertHookedFirst(saved, 'FORWARD', 'pal-FORWARD');
          assertHookedFirst(saved, 'INPUT', 'pal-INPUT');
        });
      }

      it('loads a generated cluster of 250 pods and 40 policies with one kernel rule per dataplane rule', async function () {
        const dataplane = compileObjects(fromObjects(generatedCluster()));
        assert.equal(dataplane.endpoints.length, LOCAL_PODS);
        // The cluster is only a good test if it produces what it is meant to exercise.
        const rendered = renderIptables(dataplane);
        for (const feature of ['--dports', '-p sctp', '-p udp', 'dst,dst', 'hash:net']) {
          assert.ok(rendered.includes(feature) || renderIpsets(dataplane.ipsets.values()).includes(feature), `generated cluster should produce "${feature}"`);
        }
        assert.match(rendered, / --dports 1015,1016,1017,1018,1019 /, 'the 20 TCP ports should need a second multiport rule');
        assert.match(rendered, / -p udp -m multiport --dports [0-9:,]*2090:2095,3000,/, 'the UDP ranges should spill into a second multiport rule');

        await loadIpsets(netns(), dataplane);
        await assertSetsLoaded(netns(), dataplane);
        await loadIptables(netns(), backend, rendered);

        const saved = await saveFilter(netns(), backend);
        assertChainsLoaded(saved, dataplane);
        const loadedRules = palisadeChains(saved).reduce((n, c) => n + (saved.rules.get(c)?.length ?? 0), 0);
        assert.equal(loadedRules, ruleCount(dataplane));
      });

      it('loads the same sets and hook-less chains twice in a row without duplicating anything', async function () {
        const dataplane = compileObjects(fromObjects(generatedCluster()));
        const chainsText = renderChains(dataplane.chains.values());
        for (let round = 0; round < 2; round++) {
          await loadIpsets(netns(), dataplane);
          await loadIptables(netns(), backend, chainsText);
        }
        await assertSetsLoaded(netns(), dataplane);
        const saved = await saveFilter(netns(), backend);
        assertChainsLoaded(saved, dataplane);
        assert.deepEqual(saved.rules.get('FORWARD') ?? [], [], 'no hooks were rendered, so none should be loaded');
        assert.deepEqual(saved.rules.get('INPUT') ?? [], []);
      });
    });
  }

  describe('ipset in the kernel', function () {
    const netns = useNetns('paltest-restore-ipset');

    /** Exit 0 means "is in set"; exit 1 with this message means "is not"; anything else is a failure. */
    async function inSet(set: string, address: string): Promise<boolean> {
      const result = await netns().exec(['ipset', 'test', set, address]);
      if (result.code === 0) return true;
      assert.match(result.stderr, /is NOT in set/, `ipset test ${set} ${address} failed: ${result.stderr}`);
      return false;
    }

    /** The hash:net set of the rule with these ipBlocks (each rule's blocks share one set). */
    function ruleSet(dataplane: Dataplane, rule: number): string {
      const chain = [...dataplane.chains.values()].find((c) => c.name.startsWith('pal-po-'));
      assert.ok(chain !== undefined, 'the egress policy chain');
      const set = chain.rules[rule]?.match[3];
      assert.ok(set !== undefined && dataplane.ipsets.get(set)?.type === 'hash:net', `rule ${rule} of ${chain.name} matches a hash:net set`);
      return set;
    }

    it('holds exactly the addresses of a rule\'s ipBlocks, excepts taken out, however the blocks overlap', async function () {
      const policy = policyObject('default', 'blocks', {
        podSelector: {},
        policyTypes: ['Egress'],
        egress: [
          { to: [{ ipBlock: { cidr: '172.16.0.0/12', except: ['172.16.5.0/24'] } }] },
          // One block's except lies inside another block: the union still holds it.
          { to: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.0.0.0/8'] } }, { ipBlock: { cidr: '10.1.0.0/16', except: ['10.1.1.0/24'] } }] },
          { to: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['0.0.0.0/1'] } }] },
        ],
      });
      const dataplane = compileObjects(fromObjects([...EXAMPLE_CLUSTER, policy]));
      await loadIpsets(netns(), dataplane);

      const block = ruleSet(dataplane, 0);
      assert.equal(await inSet(block, '172.16.5.7'), false, 'inside the except');
      assert.equal(await inSet(block, '172.16.4.255'), true, 'just below the except');
      assert.equal(await inSet(block, '172.16.6.0'), true, 'just above the except');
      assert.equal(await inSet(block, '172.32.0.1'), false, 'outside the CIDR');

      // 0.0.0.0/0 cannot be a hash:net member: the cover never uses /0.
      const world = ruleSet(dataplane, 1);
      assert.equal(await inSet(world, '10.2.3.4'), false, 'inside the first block\'s except, outside the second block');
      assert.equal(await inSet(world, '10.1.2.3'), true, 'inside the first block\'s except, but inside the second block');
      assert.equal(await inSet(world, '10.1.1.9'), false, 'inside both excepts');
      assert.equal(await inSet(world, '8.8.8.8'), true, 'in the lower half');
      assert.equal(await inSet(world, '200.1.1.1'), true, 'in the upper half');

      const upper = ruleSet(dataplane, 2);
      assert.deepEqual([...dataplane.ipsets.get(upper)!.members], ['128.0.0.0/1']);
      assert.equal(await inSet(upper, '127.0.0.1'), false);
      assert.equal(await inSet(upper, '128.0.0.1'), true);
    });
  });

  describe('NetworkNamespace', function () {
    const netns = useNetns('paltest-restore-helper');

    it('reports a non-zero exit as a result from exec and as NETNS_COMMAND_FAILED from run', async function () {
      const result = await netns().exec(['ipset', 'list', 'no-such-set']);
      assert.notEqual(result.code, 0);
      await assert.rejects(netns().run(['ipset', 'list', 'no-such-set']), (error: unknown) => error instanceof PalisadeError && error.code === 'NETNS_COMMAND_FAILED' && error.message.includes('no-such-set'));
    });

    it('throws NETNS_EXEC naming the program when it cannot be started', async function () {
      await assert.rejects(netns().exec(['palisade-no-such-program', '--flag']), (error: unknown) => error instanceof PalisadeError && error.code === 'NETNS_EXEC' && error.message.includes('palisade-no-such-program --flag'));
    });

    it('kills a program that outlives its timeout and says so', async function () {
      await assert.rejects(netns().exec(['sleep', '10'], { timeoutMs: 200 }), (error: unknown) => error instanceof PalisadeError && error.code === 'EXEC_TIMEOUT');
    });
  });
});
