/*
 * The process-wide registry of tracked-request tables (docs/ARCHITECTURE.md,
 * "Threads sharing a file").
 *
 * Every I/O context in the process (an inline engine's thread, or one offload
 * worker) that opens a file identity (st_dev, st_ino) with request tracking
 * joins that identity's one table here: it gets the table's memory and a
 * participant bit of its own (0..30, the waiter masks' width).  The memory is
 * allocated here, zeroed, page-aligned, and handed to JavaScript as an
 * external ArrayBuffer on each thread that joins; JavaScript runs the table
 * protocol on it with Atomics (src/table.ts).  This library is loaded once per
 * process, so this state is shared by every thread: the one mutable static
 * state of the addon, on purpose.
 *
 * Wake-ups.  Each participant registers an eventfd (its inline loop's, or its
 * worker's doorbell), which the registry dup()s: ring(id, mask) writes the
 * eventfd of every participant in mask, from any thread, without a lock, and
 * the number it writes can never belong to another file, because the registry
 * closes its copy only after every ring() that may have read it has returned.
 *
 * Lifetimes.  A table's memory is freed when the last participant has left
 * AND every ArrayBuffer over it has been garbage-collected (each holds a
 * reference, dropped by its finalizer).  A finalizer that never runs (a thread
 * torn down without it) leaks the block: never a use after free.
 *
 * Death.  A participant leaves explicitly (the file closed) or when its
 * context is torn down (its thread exits, or it is closed): the context first
 * drains its kernel I/O, then release_owned() frees the entries it still holds
 * and rings whoever parked behind them.  A context that gave up on I/O stuck
 * in the kernel keeps its entries and its bit forever: requests behind them
 * wait, rather than run next to I/O that may still land.
 */
#ifndef RINGFENCE_REGISTRY_H
#define RINGFENCE_REGISTRY_H

#include <napi.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace rf {
namespace registry {

/* The table layout (src/table.ts; compared at load through `wire`). */
constexpr uint32_t MAX_PARTICIPANTS = 31;
/* Participant p's statistics line: H_PART + p * H_PART_WORDS (+ P_IN_FLIGHT, P_HIGH_WATER). */
constexpr uint32_t H_PART = 96, H_PART_WORDS = 16, P_IN_FLIGHT = 0, P_HIGH_WATER = 1;
constexpr uint32_t HEADER_WORDS = H_PART + MAX_PARTICIPANTS * H_PART_WORDS;
constexpr uint32_t SLOT_WORDS = 16;
constexpr uint32_t H_SER_IN_FLIGHT = 0;
constexpr uint32_t H_FULL_WAITERS = 1;
constexpr uint32_t H_CAPACITY = 2;
/* Participants whose engine wants the XFS workaround (the combined rule). */
constexpr uint32_t H_WORKAROUND = 3;
/* Bitmask of the participant bits in use (informational). */
constexpr uint32_t H_PARTICIPANTS = 4;
/* One word per participant bit: set by whoever rings it, cleared by it before it re-evaluates. */
constexpr uint32_t H_RANG = 48;
constexpr uint32_t S_STATE = 0;
constexpr uint32_t S_WAITERS = 6;
constexpr uint32_t ST_MASK = 3, ST_FREE = 0, ST_CLAIMED = 1;
constexpr uint32_t SER_BIT = 4;
constexpr uint32_t OWNER_SHIFT = 3, OWNER_MASK = 0x1f;
constexpr uint32_t GEN_SHIFT = 8, GEN_MASK = (1u << 23) - 1;
constexpr uint32_t MAX_CAPACITY = 256;
/* Distinct tracked file identities open at once in the process. */
constexpr uint32_t MAX_TABLES = 4096;

/* A refusal, with the ERR_RINGFENCE_* code JavaScript gives its error. */
class Error : public std::runtime_error {
 public:
    Error(const char *code, const std::string &msg) : std::runtime_error(msg), code(code) {}
    const char *code;
};

struct Joined {
    uint32_t id = 0;   /* table id: generation << 12 | index */
    uint32_t bit = 0;  /* participant bit */
    uint32_t capacity = 0;
    bool workaround = false;
};

/* Joins the table of (dev, ino), creating it with `capacity` slots if none is open. Throws Error. */
Joined join(uint64_t dev, uint64_t ino, uint32_t capacity, bool direct, bool workaround, int wake_fd);

/* The participant's files of the identity now do (or no longer do) want the workaround. */
void set_workaround(Joined &j, bool wanted);

/* Gives up the participant bit (its entries must already be released). */
void leave(const Joined &j);

/*
 * Frees every entry `j.bit` still holds; returns the participants to wake (every other
 * participant: a context torn down in the middle of a release may have freed a slot and not
 * yet rung its waiters), already marked rung (H_RANG).
 */
uint32_t release_owned(const Joined &j);

/* Writes the eventfd of every participant in mask. Lock-free; a stale id is ignored. */
void ring(uint32_t id, uint32_t mask);

/* An ArrayBuffer over the table's memory for this thread (references it until collected). */
Napi::ArrayBuffer view(Napi::Env env, uint32_t id);

/* The table of (dev, ino) now: {capacity, participants, workaroundUsers, inFlight, highWater} or null. */
Napi::Value stats(Napi::Env env, uint64_t dev, uint64_t ino);

}  // namespace registry
}  // namespace rf

#endif
