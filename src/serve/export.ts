// What the handshake and the transmission phase share: the export's description, the
// server-wide counters and the event sink.
import type { File } from '../file.js';
import type { BufferCache } from './buffers.js';

export interface ExportSpec {
  /** The export name; "" (the default export) is accepted too. */
  name: string;
  description: string;
  /** Export size in bytes (a multiple of minBlock). */
  size: number;
  readOnly: boolean;
  /** Transmission flags sent to the client. */
  flags: number;
  minBlock: number;
  preferredBlock: number;
  maxBlock: number;
}

/** One server event; `event` says which. Printed as text or JSON by the CLI. */
export interface ServeEvent {
  event: string;
  [key: string]: unknown;
}

export type EventSink = (e: ServeEvent) => void;

export interface ServeCounters {
  connections: number;
  totalConnections: number;
  reads: number;
  writes: number;
  flushes: number;
  trims: number;
  zeroes: number;
  other: number;
  errors: number;
  bytesRead: number;
  bytesWritten: number;
  inFlight: number;
  /** Replies (to writes and reads) the engine's context sent at completion time (native/reply.h). */
  engineReplies: number;
  /** Of those, the ones it sent only in part (a full socket): the connection wrote the rest. */
  engineRepliesPartial: number;
}

export function newCounters(): ServeCounters {
  return { connections: 0, totalConnections: 0, reads: 0, writes: 0, flushes: 0, trims: 0, zeroes: 0, other: 0, errors: 0, bytesRead: 0, bytesWritten: 0, inFlight: 0, engineReplies: 0, engineRepliesPartial: 0 };
}

/**
 * Replies sent at completion time (src/engine.ts replyOpen, native/reply.h): an engine whose
 * context can send a write's reply itself, as soon as the write completed.
 */
export interface ReplyHost {
  replyOpen(fd: number): number;
  replyClose(handle: number): void;
  replyRecords(): Int32Array | null;
}

/** What every connection of one server uses. */
export interface ExportContext {
  spec: ExportSpec;
  file: File;
  buffers: BufferCache;
  counters: ServeCounters;
  emit: EventSink;
  /** Requests of one connection in flight at most (its socket stops being read beyond). */
  maxInFlight: number;
  /** A write payload above this (or a request far beyond maxBlock) ends the connection. */
  hardLimit: number;
  /** Called when the last in-flight request of the server settles. */
  idle: () => void;
  /** The engine, when its context may send write replies itself (null: every reply is written by the connection). */
  replies: ReplyHost | null;
}
