// Shared pieces of the end-to-end benchmarks: the data file, random offsets, timing.

/** xorshift32 stream of block indexes. */
export function blockStream(seed: number, blocks: number): () => number {
  let s = seed >>> 0 || 1;
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s % blocks; };
}
