// 64-bit file offsets as two int32 words (entry words E_OFF_LO/E_OFF_HI), one helper for each
// direction. Numbers are exact below 2^53 (what the API enforces for number offsets); bigints
// for the exact 64-bit arithmetic of truncate and fallocate ranges.

/** The int64 made of words (hi, lo). */
export function join64(hi: number, lo: number): bigint {
  return (BigInt(hi) << 32n) | BigInt(lo >>> 0);
}

/** [hi, lo] words of a bigint in [0, 2^63). */
export function split64(v: bigint): [number, number] {
  return [Number(v >> 32n) | 0, Number(v & 0xffffffffn) | 0];
}

/** [hi, lo] words of a non-negative integer number below 2^53. */
export function split(v: number): [number, number] {
  const hi = Math.floor(v / 4294967296);
  return [hi, (v - hi * 4294967296) | 0];
}
