/**
 * Mocha fixture for tests that need a kernel firewall: a throwaway network namespace, created before
 * and always deleted after, so nothing a test loads can reach the machine's own namespace.
 *
 *   describe('...', function () {
 *     const netns = useNetns('paltest-restore');            // one namespace for the suite
 *     const fresh = useNetns('paltest-case', { perTest: true }); // or a new one per test
 *     it('...', async () => { await netns().run(['ipset', 'list', '-n']); });
 *   });
 *
 * The suite is skipped, with the reason printed, when namespaces or the tools are unavailable (not
 * root, no iproute2, no ipset or iptables). Set PALISADE_REQUIRE_NETNS=1 (in CI, after installing
 * the tools) to make that a failure instead, so a broken runner cannot pass by skipping everything.
 */
import { commandAvailable, netnsSupported, NetworkNamespace, removeStaleNamespaces } from '../../lib/netns.js';

/** What the integration tests run inside their namespaces. */
export const REQUIRED_COMMANDS: readonly string[] = [
  'ipset',
  'iptables-nft-restore',
  'iptables-nft-save',
  'iptables-legacy-restore',
  'iptables-legacy-save',
];

export interface NetnsFixtureOptions {
  /** A fresh namespace for every test instead of one for the whole suite. */
  readonly perTest?: boolean;
}

/** Cached per process: the probe creates a namespace, and every suite would otherwise repeat it. */
let availability: Promise<string | null> | undefined;

/** Null when everything is there, else why not. */
export function netnsUnavailableReason(): Promise<string | null> {
  availability ??= (async () => {
    const supported = await netnsSupported();
    if (!supported.ok) return supported.reason;
    const missing: string[] = [];
    for (const command of REQUIRED_COMMANDS) if (!(await commandAvailable(command))) missing.push(command);
    return missing.length === 0 ? null : `missing on PATH: ${missing.join(', ')} (apt-get install iptables ipset)`;
  })();
  return availability;
}

/**
 * For suites that build their own namespaces (a lab cluster): skips the suite, or fails it under
 * PALISADE_REQUIRE_NETNS=1, when namespaces or the tools are missing (`unavailable` may check more),
 * then removes namespaces an earlier run left under the prefix. Call from a `before` hook.
 */
export async function prepareNamespaces(context: Mocha.Context, prefix: string, unavailable: () => Promise<string | null> = netnsUnavailableReason): Promise<void> {
  if (!prefix.startsWith('paltest-')) throw new Error(`prepareNamespaces: prefix "${prefix}" must start with "paltest-"`);
  const reason = await unavailable();
  if (reason !== null) {
    if (process.env['PALISADE_REQUIRE_NETNS'] === '1') throw new Error(`network namespace tests required but unavailable: ${reason}`);
    console.warn(`      skipped (${prefix}): ${reason}`);
    context.skip();
  }
  const stale = await removeStaleNamespaces(prefix);
  if (stale.length > 0) console.warn(`      removed network namespaces left by an earlier run: ${stale.join(', ')}`);
}

export function useNetns(prefix: string, options: NetnsFixtureOptions = {}): () => NetworkNamespace {
  // removeStaleNamespaces deletes by prefix: keep test namespaces apart from anything else on the machine.
  if (!prefix.startsWith('paltest-')) throw new Error(`useNetns: prefix "${prefix}" must start with "paltest-"`);
  let current: NetworkNamespace | undefined;

  const teardown = async (): Promise<void> => {
    const namespace = current;
    current = undefined;
    await namespace?.destroy();
  };

  before(async function () {
    const reason = await netnsUnavailableReason();
    if (reason !== null) {
      if (process.env['PALISADE_REQUIRE_NETNS'] === '1') throw new Error(`network namespace tests required but unavailable: ${reason}`);
      console.warn(`      skipped (${prefix}): ${reason}`);
      this.skip();
    }
    const stale = await removeStaleNamespaces(prefix);
    if (stale.length > 0) console.warn(`      removed network namespaces left by an earlier run: ${stale.join(', ')}`);
    if (!options.perTest) current = await NetworkNamespace.create(prefix);
  });

  if (options.perTest) {
    beforeEach(async () => {
      current = await NetworkNamespace.create(prefix);
    });
    afterEach(teardown);
  }
  // Runs even when a test or the before hook failed; destroy() is idempotent, so a per-test
  // namespace already removed by afterEach costs nothing here.
  after(teardown);

  return () => {
    if (current === undefined) throw new Error(`useNetns(${prefix}): no namespace outside a test (is the suite skipped?)`);
    return current;
  };
}
