import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import type { NativeAddon } from './types.js';

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
  return cached;
}
