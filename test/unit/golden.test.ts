import assert from 'node:assert/strict';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadManifests } from '../../lib/manifests.js';
import { compile, parseObjects } from '../../rules/snapshot.js';
import { makeSettings } from '../../rules/settings.js';
import { renderIpsets, renderIptables } from '../../rules/render.js';

/**
 * The rendered text for the seed tutorial's four policies, compared byte for byte with files reviewed
 * by hand. `PALISADE_UPDATE_GOLDEN=1 npm run test:unit` rewrites them; review the diff before keeping it.
 */

const root = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const update = process.env['PALISADE_UPDATE_GOLDEN'] === '1';
const POLICIES = ['deny-all', 'allow-all', 'isolate-namespace', 'allow-out-to-in'] as const;

async function rendered(policyFile: string): Promise<string> {
  const loaded = await loadManifests([path.join(root, 'test/fixtures/seed/cluster.yaml'), path.join(root, 'manifests/examples', policyFile)]);
  const { snapshot, problems } = parseObjects(loaded.map(({ object }) => ({ object })));
  assert.deepEqual(problems, []);
  const settings = makeSettings({ nodeName: 'node-a' });
  assert.ok(settings.ok);
  const dataplane = compile(snapshot, settings.settings);
  return `# ipset restore\n${renderIpsets(dataplane.ipsets.values())}# iptables-restore --noflush\n${renderIptables(dataplane)}`;
}

describe('golden rules for the seed tutorial policies', () => {
  for (const name of POLICIES) {
    it(`renders ${name} exactly as reviewed`, async () => {
      const golden = path.join(root, 'test/golden', `${name}.txt`);
      const actual = await rendered(`${name}.yaml`);
      if (update) {
        await mkdir(path.dirname(golden), { recursive: true });
        await writeFile(golden, actual);
      }
      assert.equal(actual, await readFile(golden, 'utf8'), `${name} changed; if intended, rerun with PALISADE_UPDATE_GOLDEN=1 and review the diff`);
    });
  }
});
