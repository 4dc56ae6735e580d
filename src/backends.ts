// The native I/O backends, named in this one place. Each is one file in native/ behind one
// interface (native/backend.h), registered under the same name in native/backend.cc's table.

/** In the order backend 'auto' tries them: the first one that starts is used. */
export const BACKENDS = ['io_uring', 'libaio', 'sync'] as const;
export type BackendName = typeof BACKENDS[number];

/** What options.backend (and the CLI's --backend) accepts. */
export const BACKEND_CHOICES = ['auto', ...BACKENDS] as const;
export type BackendChoice = typeof BACKEND_CHOICES[number];

/** The backends to try for a choice, in order. */
export function backendOrder(choice: BackendChoice): BackendName[] {
  return choice === 'auto' ? [...BACKENDS] : [choice];
}
