import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ListReader, ListReaderError } from '../../lib/kube/list-reader.js';

/** The streaming list reader: whatever the chunking, the same items and fields as JSON.parse of the whole. */

function read(text: string, cuts: readonly number[]): { items: unknown[]; fields: Record<string, unknown> } {
  const items: unknown[] = [];
  const reader = new ListReader((item) => items.push(item));
  const bytes = Buffer.from(text);
  let at = 0;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    reader.push(bytes.subarray(at, Math.max(at, cut)));
    at = Math.max(at, cut);
  }
  reader.push(bytes.subarray(at));
  reader.end();
  return { items, fields: reader.fields };
}

describe('the streaming list reader', () => {
  it('gives the items and the other fields of any list, however it is cut into chunks', () => {
    const value = fc.jsonValue({ maxDepth: 3 });
    fc.assert(fc.property(fc.array(value, { maxLength: 8 }), fc.dictionary(fc.string(), value, { maxKeys: 3 }), fc.array(fc.nat(2000), { maxLength: 12 }), fc.boolean(), (items, extra, cuts, pretty) => {
      const list = { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: '12', continue: 'x"y\\\\' }, ...extra, items };
      const text = JSON.stringify(list, null, pretty ? 2 : undefined);
      const result = read(text, cuts.map((c) => c % (text.length + 1)));
      assert.deepEqual(result.items, JSON.parse(JSON.stringify(items)));
      assert.deepEqual(result.fields['metadata'], (JSON.parse(text) as Record<string, unknown>)['metadata']);
    }), { numRuns: 500 });
  });

  it('reads strings holding braces, brackets, quotes and multi-byte characters split across chunks', () => {
    const items = [{ a: '}]{["\\\\"', b: 'zäöü€😀' }, [1, 2, { c: '"' }]];
    const text = JSON.stringify({ metadata: {}, items });
    for (let cut = 0; cut <= Buffer.byteLength(text); cut++) assert.deepEqual(read(text, [cut]).items, items);
  });

  it('says so when the response ends early or is not a list', () => {
    assert.throws(() => read('{"items":[{"a":1}', []), ListReaderError);
    assert.throws(() => read('[1,2]', []), ListReaderError);
    assert.throws(() => read('{"items":[1]} x', []), ListReaderError);
  });
});
