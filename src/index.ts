import './probe/register.js';
export { Engine, type EngineOptions, type EngineInfo, type EngineStats } from './engine.js';
export { File, type OpenOptions, type BatchOp, type FileInfo } from './file.js';
export { RingfenceError } from './errors.js';
export { decideWorkaround, kernelHasXfsFix, fsNameOf, type WorkaroundDecision } from './policy.js';
export { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE } from './protocol.js';
export type { BackendChoice, BackendName, WorkaroundPolicy } from './types.js';
export { serveNbd, type ServeOptions, type NbdServer, type ServeStats } from './serve/server.js';
export type { ServeEvent, ExportSpec } from './serve/export.js';
