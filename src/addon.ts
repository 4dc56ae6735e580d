import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import type { NativeAddon } from './types.js';

/** The package root: dist/src/addon.js -> ../.. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

let cached: NativeAddon | undefined;

/** Loads the native addon (build/Release/ringfence.node via node-gyp-build). */
export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const load = require('node-gyp-build') as (dir: string) => NativeAddon;
  try {
    cached = load(PACKAGE_ROOT);
  } catch (err) {
    throw new Error(
      `ringfence: the native addon is not built (${(err as Error).message.split('\n')[0]}). ` +
      'Install liburing-dev and libaio-dev (scripts/setup.sh does), then run `npm run build`.',
      { cause: err },
    );
  }
  return cached;
}
