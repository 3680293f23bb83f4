/**
 * glibc gives each thread that allocates its own malloc arena (up to 8 per
 * core) and keeps what an arena once held resident. A data worker allocates
 * little once running, but its start-up leaves several megabytes in an
 * arena of its own. Capping the process at two arenas took an engine with
 * two workers from ~150 to ~139 MB VmHWM under iperf3, throughput unchanged.
 * MALLOC_ARENA_MAX in the environment, the operator's choice, wins.
 */
import koffi from 'koffi';

const M_ARENA_MAX = -8;
const ARENAS = 2;

export function limitMallocArenas(): void {
  if (process.env['MALLOC_ARENA_MAX'] !== undefined) return;
  const mallopt = koffi.load('libc.so.6').func('int mallopt(int param, int value)');
  mallopt(M_ARENA_MAX, ARENAS);
}
