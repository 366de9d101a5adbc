/**
 * Reads a Kubernetes list response as it streams in, handing over its items one by one, so a list is
 * never held whole: an API server serving a list from its watch cache (resourceVersion=0) may ignore
 * `limit` and send every pod of the cluster in one response, hundreds of megabytes on a large cluster.
 *
 * Written by hand because what is needed is small and what libraries offer costs more than the job: a
 * streaming JSON parser emits an event per token (a pod is hundreds of them), where palisade only
 * needs each item's text to hand to JSON.parse. This scans bytes, tracking strings and nesting only,
 * and parses each item, and each other top-level field (metadata), with JSON.parse.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;

function isSpace(byte: number): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

type Phase = 'start' | 'key' | 'colon' | 'value' | 'items' | 'after-item' | 'after-value' | 'done';

export class ListReaderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ListReaderError';
  }
}

export class ListReader {
  private buf: Buffer = Buffer.alloc(0);
  /** Where scanning resumes in `buf`. */
  private pos = 0;
  private phase: Phase = 'start';
  private key = '';
  /** Scanning a value: where it starts, its nesting depth, and whether inside a string. */
  private valueStart = -1;
  private depth = 0;
  private inString = false;
  private escaped = false;
  /** Top-level fields other than items, parsed. */
  readonly fields: Record<string, unknown> = {};

  constructor(private readonly onItem: (item: unknown) => void) {}

  push(chunk: Buffer): void {
    // Keep what is not consumed yet: from the start of a value being scanned, else from the position.
    const keep = this.valueStart >= 0 ? this.valueStart : this.pos;
    this.buf = keep === this.buf.length ? chunk : Buffer.concat([this.buf.subarray(keep), chunk]);
    if (this.valueStart >= 0) this.valueStart -= keep;
    this.pos -= keep;
    this.scan();
  }

  /** Throws when the response ended before the list did. */
  end(): void {
    for (; this.pos < this.buf.length && isSpace(this.buf[this.pos]!); this.pos++);
    if (this.phase !== 'done' || this.pos < this.buf.length) throw new ListReaderError(`the list response ended ${this.phase === 'done' ? 'with trailing bytes' : 'early'}`);
  }

  private scan(): void {
    const buf = this.buf;
    while (this.pos < buf.length) {
      if (this.valueStart >= 0) {
        if (!this.scanValue()) return;
        continue;
      }
      const byte = buf[this.pos]!;
      if (isSpace(byte)) {
        this.pos++;
        continue;
      }
      switch (this.phase) {
        case 'start':
          if (byte !== OPEN_BRACE) throw new ListReaderError('a list response must be a JSON object');
          this.phase = 'key';
          this.pos++;
          break;
        case 'key':
          if (byte === CLOSE_BRACE) {
            this.phase = 'done';
            this.pos++;
            break;
          }
          if (byte !== QUOTE) throw new ListReaderError('expected a field name in the list response');
          this.beginValue();
          break;
        case 'colon':
          if (byte !== COLON) throw new ListReaderError('expected ":" in the list response');
          this.phase = 'value';
          this.pos++;
          break;
        case 'value':
          if (this.key === 'items' && byte === OPEN_BRACKET) {
            this.phase = 'items';
            this.pos++;
          } else this.beginValue();
          break;
        case 'items':
          if (byte === CLOSE_BRACKET) {
            this.phase = 'after-value';
            this.pos++;
          } else this.beginValue();
          break;
        case 'after-item':
          if (byte === COMMA) this.phase = 'items';
          else if (byte === CLOSE_BRACKET) this.phase = 'after-value';
          else throw new ListReaderError('expected "," or "]" between list items');
          this.pos++;
          break;
        case 'after-value':
          if (byte === COMMA) this.phase = 'key';
          else if (byte === CLOSE_BRACE) this.phase = 'done';
          else throw new ListReaderError('expected "," or "}" in the list response');
          this.pos++;
          break;
        case 'done':
          throw new ListReaderError('trailing bytes after the list response');
      }
    }
  }

  private beginValue(): void {
    this.valueStart = this.pos;
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
  }

  /** Scans the current value; returns false when the buffer ended inside it. */
  private scanValue(): boolean {
    const buf = this.buf;
    const first = buf[this.valueStart]!;
    const compound = first === OPEN_BRACE || first === OPEN_BRACKET;
    const string = first === QUOTE;
    let pos = this.pos;
    if (pos === this.valueStart) {
      // The opening byte itself.
      if (compound) this.depth = 1;
      if (string) this.inString = true;
      pos++;
    }
    for (; pos < buf.length; pos++) {
      const byte = buf[pos]!;
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (byte === BACKSLASH) this.escaped = true;
        else if (byte === QUOTE) {
          this.inString = false;
          if (string) return this.finishValue(pos + 1);
        }
        continue;
      }
      if (byte === QUOTE) this.inString = true;
      else if (compound) {
        if (byte === OPEN_BRACE || byte === OPEN_BRACKET) this.depth++;
        else if ((byte === CLOSE_BRACE || byte === CLOSE_BRACKET) && --this.depth === 0) return this.finishValue(pos + 1);
      } else if (isSpace(byte) || byte === COMMA || byte === CLOSE_BRACE || byte === CLOSE_BRACKET) {
        return this.finishValue(pos);
      }
    }
    this.pos = pos;
    return false;
  }

  private finishValue(end: number): boolean {
    const text = this.buf.toString('utf8', this.valueStart, end);
    this.valueStart = -1;
    this.pos = end;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new ListReaderError(`invalid JSON in the list response: ${error instanceof Error ? error.message : String(error)}`);
    }
    switch (this.phase) {
      case 'key':
        this.key = value as string;
        this.phase = 'colon';
        break;
      case 'value':
        this.fields[this.key] = value;
        this.phase = 'after-value';
        break;
      case 'items':
        this.phase = 'after-item';
        this.onItem(value);
        break;
      default:
        throw new ListReaderError(`unexpected value in the list response (${this.phase})`);
    }
    return true;
  }
}
