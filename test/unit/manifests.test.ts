import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ManifestError } from '../../lib/errors.js';
import { loadManifests, parseManifestText } from '../../lib/manifests.js';
import type { LoadedObject } from '../../lib/manifests.js';

// Compiled tests run from dist/test/unit/, so the fixtures are found from the repository root.
const root = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const fixture = (...parts: string[]): string => path.join(root, 'test/fixtures/manifests', ...parts);

/** "Kind/name@line", the shortest summary that shows what was loaded, from where, in which order. */
function summarize(loaded: readonly LoadedObject[]): string[] {
  return loaded.map(({ object, source }) => {
    const name = (object['metadata'] as { name?: string } | undefined)?.name;
    return `${String(object['kind'])}/${name}@${source.line}`;
  });
}

function rejectsWith(file: string, line: number | undefined, message: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof ManifestError, `expected a ManifestError, got ${String(err)}`);
    assert.deepEqual([err.file, err.line, err.message], [file, line, message]);
    return true;
  };
}

describe('manifests', () => {
  describe('loadManifests', () => {
    const cases: { name: string; paths: string[]; expected: string[] }[] = [
      {
        name: 'reads every document of a multi-document file and skips the empty one',
        paths: [fixture('multi.yaml')],
        expected: ['Namespace/shop@2', 'NetworkPolicy/default-deny@9'],
      },
      {
        name: 'flattens a List into its items, each at the line where it starts',
        paths: [fixture('list.yaml')],
        expected: ['Namespace/shop@4', 'NetworkPolicy/allow-web@8'],
      },
      {
        name: 'flattens a PodList and gives its items the kind and apiVersion they leave out',
        paths: [fixture('podlist.yaml')],
        expected: ['Pod/web-1@6', 'Pod/web-2@11'],
      },
      {
        name: 'reads JSON as well as YAML',
        paths: [fixture('policy.json')],
        expected: ['NetworkPolicy/from-json@1'],
      },
      {
        name: 'reads a directory recursively in byte order, ignoring hidden and non-manifest files',
        paths: [fixture('tree')],
        expected: ['ConfigMap/a-dash-b@1', 'ConfigMap/a-deep-z@1', 'ConfigMap/a-x@1', 'ConfigMap/b@1'],
      },
      {
        name: 'returns nothing for a directory without manifests',
        paths: [fixture('no-manifests')],
        expected: [],
      },
      {
        name: 'reads a file named explicitly whatever its extension',
        paths: [fixture('no-manifests', 'named.txt')],
        expected: ['ConfigMap/named-explicitly@1'],
      },
      {
        name: 'keeps the order of the paths it is given',
        paths: [fixture('policy.json'), fixture('list.yaml')],
        expected: ['NetworkPolicy/from-json@1', 'Namespace/shop@4', 'NetworkPolicy/allow-web@8'],
      },
    ];
    for (const { name, paths, expected } of cases) {
      it(name, async () => {
        assert.deepEqual(summarize(await loadManifests(paths)), expected);
      });
    }

    it('fills in a typed list item as a complete object', async () => {
      const [first] = await loadManifests([fixture('podlist.yaml')]);
      assert.deepEqual(first?.object, {
        kind: 'Pod',
        apiVersion: 'v1',
        metadata: { name: 'web-1', namespace: 'shop' },
        status: { podIP: '10.0.0.1' },
      });
      assert.equal(first?.source.file, fixture('podlist.yaml'));
    });

    it('reports a missing path with the reason the system gives', async () => {
      const missing = fixture('does-not-exist.yaml');
      await assert.rejects(loadManifests([missing]), rejectsWith(missing, undefined, `${missing}: cannot read: no such file or directory`));
    });

    it('reports a syntax error with the file and the line where it is', async () => {
      const file = fixture('bad-syntax.yaml');
      await assert.rejects(
        loadManifests([file]),
        rejectsWith(file, 3, `${file}:3: Nested mappings are not allowed in compact mappings`),
      );
    });
  });

  describe('parseManifestText', () => {
    const loads: { name: string; text: string; expected: string[] }[] = [
      { name: 'skips a text with nothing in it', text: '', expected: [] },
      { name: 'skips documents holding only comments or null', text: '# c\n---\n---\n~\n', expected: [] },
      {
        name: 'gives each document the line where its object starts',
        text: '---\n# lead\nkind: A\napiVersion: v1\n---\n\nkind: B\napiVersion: v1\n',
        expected: ['A/undefined@3', 'B/undefined@7'],
      },
      {
        name: 'flattens Lists nested in Lists',
        text: 'apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: PodList\n  items:\n  - metadata: {name: p}\n',
        expected: ['Pod/p@7'],
      },
      {
        name: 'treats a kind ending in List without items as an ordinary object',
        text: 'apiVersion: example.com/v1\nkind: AllowList\nspec: {}\n',
        expected: ['AllowList/undefined@1'],
      },
      { name: 'honours merge keys as kubectl does', text: 'base: &b {kind: K}\n<<: *b\napiVersion: v1\n', expected: ['K/undefined@1'] },
    ];
    for (const { name, text, expected } of loads) {
      it(name, () => {
        assert.deepEqual(summarize(parseManifestText(text, 'in.yaml')), expected);
      });
    }

    const failures: { name: string; text: string; line: number; message: string }[] = [
      { name: 'rejects a duplicate key', text: 'kind: A\napiVersion: v1\nkind: B\n', line: 3, message: 'Map keys must be unique' },
      {
        name: 'rejects a syntax error in a later document at its own line',
        text: 'kind: A\napiVersion: v1\n---\nkind: B\napiVersion: v1\nmetadata: name: x\n',
        line: 6,
        message: 'Nested mappings are not allowed in compact mappings',
      },
      {
        name: 'rejects a top-level sequence',
        text: 'kind: A\napiVersion: v1\n---\n- a\n- b\n',
        line: 4,
        message: 'expected a Kubernetes object (a mapping), found a sequence',
      },
      { name: 'rejects a top-level scalar', text: '\n\nhello\n', line: 3, message: 'expected a Kubernetes object (a mapping), found a scalar' },
      { name: 'rejects an object without kind', text: 'apiVersion: v1\nmetadata: {}\n', line: 1, message: 'object has no kind' },
      { name: 'rejects an object without apiVersion', text: 'kind: Pod\n', line: 1, message: 'object has no apiVersion' },
      { name: 'rejects a kind that is not a string', text: 'apiVersion: v1\nkind: [Pod]\n', line: 1, message: 'object has no kind' },
      {
        name: 'rejects a List item that is not a mapping, at the item line',
        text: 'apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: A\n- just text\n',
        line: 6,
        message: 'expected a Kubernetes object (a mapping), found a scalar',
      },
      {
        name: 'rejects a List item without kind, at the item line',
        text: 'apiVersion: v1\nkind: List\nitems:\n\n- apiVersion: v1\n',
        line: 5,
        message: 'object has no kind',
      },
      { name: 'rejects a List whose items are not a sequence', text: 'apiVersion: v1\nkind: List\nitems: 3\n', line: 1, message: 'List items must be a sequence' },
      {
        name: 'rejects an alias to an anchor that was never set',
        text: 'apiVersion: v1\nkind: A\nspec: *nowhere\n',
        line: 1,
        message: 'Unresolved alias (the anchor must be set before the alias): nowhere',
      },
    ];
    for (const { name, text, line, message } of failures) {
      it(name, () => {
        assert.throws(() => parseManifestText(text, 'in.yaml'), rejectsWith('in.yaml', line, `in.yaml:${line}: ${message}`));
      });
    }
  });
});
