import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import type { NativeAddon } from './types.js';
import {
  GEN_SHIFT, HEADER_WORDS, H_RANG, H_PART, H_PART_WORDS, P_IN_FLIGHT, P_HIGH_WATER, H_PARTICIPANTS, H_WORKAROUND, MAX_CAPACITY, MAX_WORKERS, OWNER_SHIFT, SLOT_WORDS,
} from './table.js';
import {
  COMPL_WORDS, ENTRY_WORDS, E_AUX, E_BUF, E_FILE, E_LEN, E_OFF_HI, E_OFF_LO, E_OP, E_TAG, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE, IOV_MAX, MAX_FILES, OP_MAX, WIRE,
} from './protocol.js';

/** The package root: dist/src/addon.js -> ../.. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

let cached: NativeAddon | undefined;

/**
 * Loads the native addon via node-gyp-build: build/Release/ringfence.node when built from
 * source, else the prebuilt Node-API binary prebuilds/linux-x64/ringfence.node (one binary for
 * every Node >= 20, liburing and libaio linked in), which needs no install script.
 */
export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const load = require('node-gyp-build') as (dir: string) => NativeAddon;
  try {
    cached = load(PACKAGE_ROOT);
  } catch (err) {
    throw new Error(
      `ringfence: no native addon loads (${(err as Error).message.split('\n')[0]}). ` +
      `The prebuilt one serves Linux ${process.arch === 'x64' ? 'x64' : `x64 only (this is ${process.arch})`} with glibc; ` +
      'otherwise build it from source: install a C++ toolchain, python3, liburing-dev and libaio-dev ' +
      '(Debian/Ubuntu: apt-get install build-essential python3 liburing-dev libaio-dev), then run ' +
      '`npm rebuild ringfence --allow-scripts=ringfence` (in a clone of the repository: `npm run build`).',
      { cause: err },
    );
  }
  checkWire(cached, PACKAGE_ROOT);
  return cached;
}

/**
 * The wire constants of src/protocol.ts against the addon's (native/ops.h): an addon built from
 * other sources than this JavaScript would misread every entry, so it is refused here.
 */
export function checkWire(addon: NativeAddon, root: string): void {
  const mine: Record<string, number> = {
    ...WIRE, ENTRY_WORDS, E_OP, E_FILE, E_OFF_LO, E_OFF_HI, E_LEN, E_BUF, E_TAG, E_AUX, COMPL_WORDS, OP_MAX, IOV_MAX, MAX_FILES,
    FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE,
    TABLE_HEADER_WORDS: HEADER_WORDS, TABLE_SLOT_WORDS: SLOT_WORDS, TABLE_H_WORKAROUND: H_WORKAROUND, TABLE_H_RANG: H_RANG,
    TABLE_H_PARTICIPANTS: H_PARTICIPANTS, TABLE_H_PART: H_PART, TABLE_H_PART_WORDS: H_PART_WORDS, TABLE_P_IN_FLIGHT: P_IN_FLIGHT, TABLE_P_HIGH_WATER: P_HIGH_WATER,
    TABLE_GEN_SHIFT: GEN_SHIFT, TABLE_OWNER_SHIFT: OWNER_SHIFT, TABLE_MAX_CAPACITY: MAX_CAPACITY, TABLE_MAX_PARTICIPANTS: MAX_WORKERS,
  };
  const theirs = addon.wire ?? {};
  const diff = Object.keys(mine).filter((k) => theirs[k] !== mine[k]);
  if (diff.length > 0) {
    cached = undefined;
    throw new Error(`ringfence: the native addon in ${root} does not match this JavaScript (wire constants differ: ` +
      `${diff.map((k) => `${k} ${theirs[k]} vs ${mine[k]}`).join(', ')}); it was built from other sources: rebuild it (\`npm run build\` in a clone, ` +
      'or reinstall the package)');
  }
}
