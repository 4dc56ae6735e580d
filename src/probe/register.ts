// Registers the dynamic XFS-race check as the resolver of xfsWorkaround 'probe' (see
// src/policy.ts setProbeResolver). Imported for its effect by the package entry (src/index.ts)
// and the CLI, so that src/file.ts needs no import of the probe, which starts engines itself.
import { setProbeResolver } from '../policy.js';
import { resolveProbePolicy } from './cache.js';

setProbeResolver((path, kernelRelease) => resolveProbePolicy(path, kernelRelease));
