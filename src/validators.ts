// Argument validation at the API boundary, in the style of Node's lib/internal/validators:
// TypeError for the wrong kind of value, RangeError for a value out of range, each with a
// `code` so callers can branch on it.

import { fileURLToPath } from 'node:url';

export const INT64_MAX = (1n << 63n) - 1n;

function typeError(name: string, expected: string, value: unknown): TypeError {
  const err = new TypeError(`The "${name}" argument must be ${expected}. Received ${describe(value)}`);
  (err as TypeError & { code: string }).code = 'ERR_INVALID_ARG_TYPE';
  return err;
}

export function rangeError(name: string, expected: string, value: unknown): RangeError {
  const err = new RangeError(`The value of "${name}" is out of range. It must be ${expected}. Received ${describe(value)}`);
  (err as RangeError & { code: string }).code = 'ERR_OUT_OF_RANGE';
  return err;
}

export function invalidArg(name: string, reason: string, value: unknown): TypeError {
  const err = new TypeError(`The argument "${name}" ${reason}. Received ${describe(value)}`);
  (err as TypeError & { code: string }).code = 'ERR_INVALID_ARG_VALUE';
  return err;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'number') return Object.is(value, -0) ? '-0' : String(value);
  if (typeof value === 'string') return `type string (${JSON.stringify(value.length > 28 ? value.slice(0, 25) + '...' : value)})`;
  if (typeof value === 'function') return `function ${value.name || '<anonymous>'}`;
  if (typeof value === 'object') {
    const ctor = (value as object).constructor?.name;
    return ctor ? `an instance of ${ctor}` : 'an object';
  }
  return `type ${typeof value}`;
}

/** A byte offset or size: a safe non-negative integer number, or a bigint in [0, 2^63-1]. */
export function validateOffset(value: unknown, name: string): bigint {
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 0 || value > Number.MAX_SAFE_INTEGER) {
      throw rangeError(name, `an integer >= 0 and <= 2^53-1 (pass a bigint for larger offsets)`, value);
    }
    return BigInt(value);
  }
  if (typeof value === 'bigint') {
    if (value < 0n || value > INT64_MAX) throw rangeError(name, '>= 0n and <= 2^63-1', value);
    return value;
  }
  throw typeError(name, 'of type number or bigint', value);
}

/** A length: offset rules plus > 0, and offset + length must stay <= 2^63-1. */
export function validateLength(value: unknown, name: string, offset: bigint, max: bigint = INT64_MAX): bigint {
  const len = validateOffset(value, name);
  if (len === 0n) throw rangeError(name, '> 0', value);
  if (len > max) throw rangeError(name, `<= ${max}`, value);
  if (offset + len > INT64_MAX) throw rangeError(`${name} + offset`, '<= 2^63-1', offset + len);
  return len;
}

export function validateInteger(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number') throw typeError(name, 'of type number', value);
  if (!Number.isInteger(value) || value < min || value > max) throw rangeError(name, `an integer >= ${min} and <= ${max}`, value);
  return value;
}

export function validateBoolean(value: unknown, name: string): boolean {
  if (typeof value !== 'boolean') throw typeError(name, 'of type boolean', value);
  return value;
}

export function validateString(value: unknown, name: string): string {
  if (typeof value !== 'string') throw typeError(name, 'of type string', value);
  return value;
}

export function validateOneOf<T extends string>(value: unknown, name: string, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalidArg(name, `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}`, value);
  }
  return value as T;
}

export function validateObject(value: unknown, name: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw typeError(name, 'of type object', value);
  return value as Record<string, unknown>;
}

/** Rejects option names the function does not know, so typos do not pass silently. */
export function validateKnownKeys(obj: Record<string, unknown>, name: string, known: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (!known.includes(key)) throw invalidArg(`${name}.${key}`, `is not a known option (known: ${known.join(', ')})`, obj[key]);
  }
}

/**
 * A file path as node:fs takes it: a string, a Buffer or a file: URL, without NUL bytes.
 * Returns it as a string (a Buffer path is decoded as UTF-8).
 */
export function validatePath(value: unknown, name: string): string {
  let p: string;
  if (typeof value === 'string') p = value;
  else if (value instanceof Uint8Array) p = Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('utf8');
  else if (value instanceof URL) {
    if (value.protocol !== 'file:') throw invalidArg(name, `must be a file: URL (got ${value.protocol})`, value.href);
    p = fileURLToPath(value);
  } else throw typeError(name, 'of type string or an instance of Buffer or URL', value);
  if (p.length === 0) throw invalidArg(name, 'must not be empty', value);
  if (p.includes('\u0000')) {
    const e = invalidArg(name, 'must be a string, Buffer or URL without null bytes', p.replace(/\u0000/g, '\\0'));
    throw e;
  }
  return p;
}

/** A Uint8Array (or Buffer) that is not detached and has at least one byte. */
export function validateBuffer(value: unknown, name: string): Uint8Array {
  if (!(value instanceof Uint8Array)) throw typeError(name, 'an instance of Uint8Array or Buffer', value);
  if (value.buffer.byteLength === 0 && value.byteLength === 0) {
    // A detached ArrayBuffer reports byteLength 0.
    throw invalidArg(name, 'is empty or detached (its ArrayBuffer was transferred)', value);
  }
  if (value.byteLength === 0) throw invalidArg(name, 'must not be empty', value);
  return value;
}
